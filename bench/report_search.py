"""The report page, ``vidcap search`` and ``vidcap export`` on a big output folder, in one run.

    python bench/report_search.py [--videos 10000] [--captions 60] [--out bench/results/report_search.json]

The folder is written directly (``tests.support.folders.big_folder``: BLIP-2-like captions,
JSONL + VTT + resume records, no model). Reported (never asserted):
- ``report``: ``write_report`` (every .vtt copied into a script), then again (unchanged
  .vtt files skipped: what every later run's end costs);
- ``search``: ``vidcap search`` in this process — word queries (files without their words
  are not parsed) and a regular expression (every file parsed) — seconds, then the peak of
  Python's traced memory in a second pass (the captions on disk: ``jsonl_mib``);
- ``export``: ``export_fiftyone`` of the whole folder;
- ``browser`` (when Playwright and Chromium are here): the page from ``file://`` — time to
  every shard loaded, the longest main-thread task, and each query's search time in the page.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.folders import NEEDLE, big_folder  # noqa: E402
from vidcap.export import export_fiftyone  # noqa: E402
from vidcap.mask import MaskSettings  # noqa: E402
from vidcap.report import write_report  # noqa: E402
from vidcap.search import SearchStats, search  # noqa: E402

QUERIES = [(NEEDLE, False), ("red car", False), (r"dog .*(beach|park)", True)]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]  # fmt: skip


def timed(function, *args, **kwargs):
    started = time.monotonic()
    result = function(*args, **kwargs)
    return result, round(time.monotonic() - started, 3)


def bench_search(out: Path) -> dict:
    results = {}
    for query, regex in QUERIES:
        stats = SearchStats()
        moments, seconds = timed(search, [out], [query], MaskSettings(regex=regex), stats)
        tracemalloc.start()  # a second pass for memory: tracing slows Python down several-fold
        search([out], [query], MaskSettings(regex=regex))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results[query] = {"regex": regex, "seconds": seconds, "moments": len(moments),
                          "captions": stats.frames, "peak_traced_mib": round(peak / 2**20, 1)}  # fmt: skip
    return results


def bench_browser(out: Path) -> dict | str:
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "playwright is not installed"
    if chromium is None:
        return "chromium is not installed"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.add_init_script(
            "window.longest = 0; new PerformanceObserver(l => l.getEntries().forEach(e =>"
            " window.longest = Math.max(window.longest, e.duration))).observe({type: 'longtask'});"
        )
        started = time.monotonic()
        page.goto((out / "index.html").as_uri())
        page.evaluate("window.vidcapReport.ready")
        result: dict = {"loaded_s": round(time.monotonic() - started, 3)}
        devtools = page.context.new_cdp_session(page)  # the page's JavaScript heap, after a GC
        devtools.send("HeapProfiler.collectGarbage")
        heap = devtools.send("Runtime.getHeapUsage")["usedSize"]
        result["js_heap_mib"] = round(heap / 2**20, 1)
        page.wait_for_timeout(500)  # long-task entries arrive after the fact
        result["load_longest_task_ms"] = page.evaluate("window.longest")
        for query, regex in QUERIES:
            result[query] = page.evaluate(
                "([q, r]) => { const s = window.vidcapReport.search(q, {regex: r});"
                " return {ms: Math.round(s.ms), moments: s.moments.length}; }",
                [query, regex],
            )
        page.wait_for_timeout(500)
        result["longest_task_ms"] = page.evaluate("window.longest")
        browser.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--captions", type=int, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "last_report_search.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidcap-bench-") as scratch:
        out = Path(scratch) / "out"
        _, generated = timed(big_folder, out, args.videos, args.captions)
        first, report_s = timed(write_report, out)
        _, again_s = timed(write_report, out)
        stats, export_s = timed(export_fiftyone, out, Path(scratch) / "fo")
        result = {
            "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
            "videos": args.videos,
            "captions_per_video": args.captions,
            "folder_written_s": generated,
            "report": {
                "first_s": report_s,
                "again_s": again_s,
                "data_files": first.shards,
                "data_mib": round(
                    sum(p.stat().st_size for p in (out / "report").glob("data-*.js")) / 2**20, 1
                ),
            },  # fmt: skip
            "search": bench_search(out),
            "jsonl_mib": round(sum(p.stat().st_size for p in out.glob("*.jsonl")) / 2**20, 1),
            "export": {"seconds": export_s, "videos": stats.videos, "frames": stats.frames},
            "browser": bench_browser(out),
        }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
