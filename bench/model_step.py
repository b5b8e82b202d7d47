"""The model step's candidate speed-ups (#19 item 3), side by side in one run.

    python bench/model_step.py [--dry-run] [--batches 32,256] [--tokens 20] [--out FILE]

The BLIP-2-sized model (``bench/blip2_sized.py``: fp16 on CUDA) or, with ``--dry-run``, the
tiny model on the CPU (a check of the script before it goes to a GPU, not a measurement).
Every variant captions the same frames at each batch size; reported: frames/s, the ratio to
the baseline, and the share of frames whose new token ids equal the baseline's (random
weights make near-ties, so flips are more likely than with the real weights: a variant kept
must then be checked on real captions).

- ``baseline``: ``Captioner.generate`` as vidcap runs it (transformers' default attention,
  a dynamic KV cache);
- ``static``: a static KV cache (``cache_implementation="static"``), not compiled;
- ``static_compiled``: a static KV cache with transformers' automatic ``torch.compile`` of the
  decoding step (CUDA graphs; CUDA only: the first call compiles and is not timed);
- ``eager_attention``: ``attn_implementation="eager"`` (what SDPA, the default, is worth);
- ``qformer_half``: the Q-Former and its queries in the language model's dtype (BLIP-2 keeps
  them in fp32).

A variant that fails reports its error in one line and the others go on. Ratios, never
assertions.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPEATS = 3  # timed batches per variant and batch size (after one untimed)


def load(dry_run: bool, tokens: int):
    import torch

    if dry_run:
        from vidcap.model import Captioner
        from vidcap.settings import ModelSettings

        return Captioner.load(ModelSettings(model="tiny", device="cpu"))
    from blip2_sized import blip2_sized_captioner

    return blip2_sized_captioner("cuda", torch.float16, None, tokens)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def variants(captioner, tokens: int) -> dict[str, Callable[[object], object]]:
    """name → pixels → new token ids, each undone after use (``_with``)."""
    import torch

    model = captioner.model
    cuda = captioner.device.startswith("cuda")

    def generate(**extra) -> Callable[[object], object]:
        def run(pixels):
            with torch.inference_mode():
                return model.generate(
                    pixel_values=pixels,
                    max_new_tokens=tokens,
                    min_new_tokens=tokens,
                    num_beams=1,
                    do_sample=False,
                    **extra,
                )

        return run

    chosen = {
        "baseline": generate(),
        "static": generate(cache_implementation="static", disable_compile=True),
        "eager_attention": generate(),
        "qformer_half": generate(),
    }
    if cuda:
        chosen["static_compiled"] = generate(cache_implementation="static")
    return chosen


class _with:
    """Set a variant's model state up for its block (attention, Q-Former dtype), then undo."""

    def __init__(self, captioner, name: str) -> None:
        self.model, self.name, self.dtype = captioner.model, name, captioner.dtype
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> _with:
        model = self.model
        if self.name == "eager_attention":
            before = model.config._attn_implementation
            model.set_attn_implementation("eager")
            self._undo.append(lambda: model.set_attn_implementation(before))
        elif self.name == "qformer_half":
            model.qformer.to(self.dtype)
            model.query_tokens.data = model.query_tokens.data.to(self.dtype)
            self._undo.append(lambda: model.qformer.float())
            self._undo.append(
                lambda: setattr(model.query_tokens, "data", model.query_tokens.data.float())
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._undo):
            undo()


def measure(captioner, batches: list[int], tokens: int) -> list[dict]:
    rng = np.random.default_rng(0)
    h, w = captioner.input_size
    rows = []
    runs = variants(captioner, tokens)
    for batch in batches:
        frames = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(batch)]
        pixels = captioner.preprocess(frames)
        reference = None
        for name, run in runs.items():
            row: dict = {"variant": name, "batch": batch}
            try:
                with _with(captioner, name):
                    ids = run(pixels)  # untimed: warm-up, compilation, and the tokens
                    sync(captioner.device)
                    started = time.perf_counter()
                    for _ in range(REPEATS):
                        run(pixels)
                    sync(captioner.device)
                    seconds = (time.perf_counter() - started) / REPEATS
            except Exception as exc:  # noqa: BLE001 - one variant failing is a result too
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                rows.append(row)
                print(json.dumps(row), flush=True)
                continue
            ids = ids.cpu()
            if reference is None:
                reference = ids
            same = ids.shape == reference.shape and bool((ids == reference).all())
            per_frame = (
                (ids == reference).all(dim=1).float().mean().item()
                if ids.shape == reference.shape
                else 0.0
            )
            row.update(
                frames_per_s=round(batch / seconds, 1),
                same_tokens=same,
                frames_with_same_tokens=round(per_frame, 3),
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
        base = next(r for r in rows if r["batch"] == batch and r["variant"] == "baseline")
        for row in rows:
            if row["batch"] == batch and "frames_per_s" in row and "frames_per_s" in base:
                row["over_baseline"] = round(row["frames_per_s"] / base["frames_per_s"], 3)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU")
    parser.add_argument("--batches", default=None, help="comma-separated (default 32,256; 8)")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch
    import transformers

    batches = [int(b) for b in (args.batches or ("8" if args.dry_run else "32,256")).split(",")]
    captioner = load(args.dry_run, args.tokens)
    report = {
        "model": "tiny (dry run, CPU)" if args.dry_run else "blip2-sized fp16",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "tokens": args.tokens,
        "rows": measure(captioner, batches, args.tokens),
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
