"""The report page for everyone: by keyboard alone, to a screen reader (axe-core's rules), on
a phone or at 200 % zoom, printed, dark, right to left; and the player's captions.

The folder: ``shapes.mp4`` captioned with ``--scenes`` (ten shots: a cue track and a scene
track), ``subject.mp4`` at ``--fps 1`` with a ``vidcap mask`` track, a clip captioned at every
frame (more frames than a strip shows at first), and a written video with right-to-left and
very long captions. Real Chromium (``tests/support/browser.py``), the page opened from disk.
"""

from __future__ import annotations

import shutil
import time
from fractions import Fraction
from pathlib import Path

import pytest

from tests.support.browser import Page, checked_page
from tests.support.folders import FakeVideo, fake_thumbs, write_folder
from tests.support.videos import VideoSpec, constant_rate, write_video
from vidcap.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARABIC = "قطة سوداء تجلس على طاولة خشبية"
LONG = "a red circle " * 160  # 2,080 characters
SERIOUS = ("serious", "critical")
# The names of what has the focus, as a list (a test reads where Tab went): a frame's index
# as a screen reader hears it ("(frame 121 of 130)": a strip shown whole holds the buttons in
# view only), a track button's among its buttons
FOCUSED = """() => { const e = document.activeElement;
  const card = e.closest('.card'), strip = e.closest('.strip, .track');
  const position = e.querySelector(':scope > .position');
  return { tag: e.tagName, id: e.id, cls: e.className, card: card && card.dataset.name,
           group: strip && strip.className.replace(' whole', ''),
           index: position ?
                    Number(position.textContent.match(/frame ([\\d,]+)/)[1].replace(/,/g, '')) - 1 :
                  strip ? [...strip.children].indexOf(e) : -1 }; }"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("access")
    (root / "v").mkdir()
    shutil.copy(ROOT / "sample_videos" / "shapes.mp4", root / "v" / "shapes.mp4")
    out = root / "out"
    quiet = ["--model", "tiny", "--out", str(out), "--quiet"]
    assert main(["caption", str(root / "v" / "shapes.mp4"), "--scenes", *quiet]) == 0
    shutil.copy(ROOT / "sample_videos" / "subject.mp4", root / "v" / "subject.mp4")
    assert main(["caption", str(root / "v" / "subject.mp4"), *quiet]) == 0
    mask = ["mask", str(out / "subject.jsonl"), "--query", "red circle"]
    assert main([*mask, "--out", str(out / "subject.mask.json")]) == 0
    spec = VideoSpec("long", "libx264", ".mp4", constant_rate(130, Fraction(25)))
    write_video(root / "v" / "long.mp4", spec)
    assert main(["caption", str(root / "v" / "long.mp4"), "--every-n", "1", *quiet]) == 0
    write_folder(out, [FakeVideo("written", (ARABIC, LONG, "a cat"))])
    fake_thumbs(out, "written", [0, 10, 20])
    assert main(["report", str(out)]) == 0
    return out


@pytest.fixture
def page(browser, folder: Path):
    yield from checked_page(browser, (folder / "index.html").as_uri())


def focused(page: Page) -> dict:
    return page.evaluate(FOCUSED)


def tab_until(page: Page, wanted, limit: int = 80, key: str = "Tab") -> list[dict]:
    """Press ``key`` until ``wanted(focused)``; the stops on the way, that one last."""
    stops = []
    for _ in range(limit):
        page.keyboard.press(key)
        stops.append(focused(page))
        if wanted(stops[-1]):
            return stops
    raise AssertionError(f"never reached: {stops}")


def clock_of(page: Page) -> str:
    return page.text_content("#player-time")


def test_the_keyboard_plays_every_frame_and_segment_and_comes_back(page: Page) -> None:
    """Regression: a strip's frames and the tracks' segments took clicks only (a keyboard
    reached the player through search results alone); the player never took the focus,
    Escape left it open, and closing it dropped the focus on the page's body."""
    stops = tab_until(page, lambda f: f["card"] == "subject" and "frame" in f["cls"])
    # a strip and a track are one Tab stop each, whatever their length
    groups = [(s["card"], s["group"]) for s in stops if s["group"]]
    assert len(groups) == len(set(groups)), groups
    assert ("shapes", "track scenes") in groups and ("subject", "track mask") in groups
    assert focused(page)["index"] == 0
    for key, index in (("ArrowRight", 1), ("ArrowRight", 2), ("End", 33), ("Home", 0)):
        page.keyboard.press(key)
        assert focused(page)["index"] == index, key
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    assert page.is_visible("#player") and clock_of(page) == "0:01.000 – 0:02.000"
    assert page.evaluate("document.getElementById('player').contains(document.activeElement)")
    page.keyboard.press("Escape")
    assert page.is_hidden("#player")
    assert focused(page)["card"] == "subject" and focused(page)["index"] == 1  # back where it was
    # Tab leaves the strip at once, and comes back to the frame last focused
    page.keyboard.press("Tab")
    assert focused(page)["group"] != "strip"
    page.keyboard.press("Shift+Tab")
    assert focused(page)["index"] == 1 and "frame" in focused(page)["cls"]
    # a scene of the shapes video, by Space
    tab_until(
        page, lambda f: f["card"] == "shapes" and f["group"] == "track scenes", key="Shift+Tab"
    )
    page.keyboard.press("ArrowRight")
    page.keyboard.press(" ")
    assert clock_of(page) == "0:03.000 – 0:06.000"
    page.click("#player-close")
    assert focused(page)["group"] == "track scenes" and focused(page)["index"] == 1


def test_show_all_hands_the_focus_to_the_first_frame_it_shows(page: Page) -> None:
    button = page.locator(".card[data-name=long] button.show-all")
    button.focus()
    page.keyboard.press("Enter")
    page.wait_for_function("!document.querySelector('.card[data-name=long] button.show-all')")
    assert focused(page)["card"] == "long" and focused(page)["index"] == 120
    # the strip holds every frame now: End, Home and the arrow keys go through them all
    for key, index in (("End", 129), ("ArrowLeft", 128), ("Home", 0), ("ArrowLeft", 0)):
        page.keyboard.press(key)
        assert focused(page)["index"] == index, key


def test_axe_finds_nothing_serious_in_any_state(browser, folder: Path) -> None:
    """axe-core (the rules screen-reader and keyboard audits use) on the page loaded, with
    results and the player open, on a phone and dark. Regression: each strip was a scroll area
    nothing in it could be focused (``scrollable-region-focusable``)."""
    axe = pytest.importorskip("axe_playwright_python", reason="pip install axe-playwright-python")
    script = Path(axe.__file__).with_name("axe.min.js")
    for options in ({}, {"viewport": {"width": 375, "height": 667}, "color_scheme": "dark"}):
        page = Page(browser, (folder / "index.html").as_uri(), **options)
        page.add_script_tag(path=str(script))
        run = "axe.run().then(r => r.violations.map(v => [v.id, v.impact, v.nodes[0].target]))"
        assert [v for v in page.evaluate(run) if v[1] in SERIOUS] == [], options
        page.fill("#query", "circle")
        page.press("#query", "Enter")
        page.click(".moment")
        assert [v for v in page.evaluate(run) if v[1] in SERIOUS] == [], options
        page.click(".card[data-name=long] .show-all")  # a strip shown whole
        assert [v for v in page.evaluate(run) if v[1] in SERIOUS] == [], options
        assert page.problems == []
        page.close()


def player_at_full_size(page: Page) -> None:
    """Once the video's size is known (the player grows then), and the page has seen it."""
    page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=20_000)
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def test_what_has_the_focus_is_never_under_the_header_or_the_player(page: Page) -> None:
    """Regression: Shift+Tab up the page focused controls under the sticky header, and the
    fixed player hid the page's end for good."""
    page.locator(".card[data-name=subject] .strip .frame").first.click()
    player_at_full_size(page)
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    last = page.locator(".card").last.bounding_box()
    player = page.locator("#player").bounding_box()
    assert last["y"] + last["height"] <= player["y"]  # the end scrolls above the player
    page.locator(".card[data-name=shapes] .strip .frame").first.focus()
    header = page.locator("#top").bounding_box()
    frame = page.locator(".card[data-name=shapes] .strip .frame").first.bounding_box()
    assert frame["y"] >= header["y"] + header["height"]


@pytest.mark.parametrize("viewport", [{"width": 375, "height": 667}, {"width": 640, "height": 450}])
def test_a_phone_or_200_percent_zoom_keeps_the_page_readable(
    browser, folder: Path, viewport: dict
) -> None:
    """Regression: on a phone the sticky header and the fixed player left 69 px of page; at
    200 % zoom (a 640 × 450 viewport) the player covered all of it, nothing to scroll to."""
    page = Page(browser, (folder / "index.html").as_uri(), viewport=viewport)
    assert page.evaluate("getComputedStyle(document.getElementById('top')).position") == "static"
    page.locator(".card[data-name=subject] .strip .frame").nth(2).click()
    player_at_full_size(page)
    player = page.locator("#player").bounding_box()
    assert player["x"] >= 0 and player["x"] + player["width"] <= viewport["width"]
    assert player["height"] < 0.8 * viewport["height"]
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    last = page.locator(".card").last.bounding_box()
    assert last["y"] + last["height"] <= page.locator("#player").bounding_box()["y"]
    assert page.problems == []
    page.close()


def test_a_new_video_in_the_player_shows_its_own_cue_alone(page: Page) -> None:
    """Regression: the player's next video showed its cue and, below it, the last cue of the
    video before, at every time; and a moment starting where a cue ends showed both cues.
    What Chromium draws over the video is read from the player's own (user-agent) shadow DOM."""
    wanted = ["a green triangle on a black background"]
    page.locator(".card[data-name=shapes] .strip .frame").nth(2).click()
    assert drawn_cues(page, wanted) == wanted
    wanted = ["a red circle and a green square on a gray background"]
    page.locator(".card[data-name=subject] .strip .frame").nth(5).click()
    assert drawn_cues(page, wanted) == wanted
    page.locator(".card[data-name=shapes] .track.scenes button").nth(1).click()  # 3.0 s
    assert clock_of(page).startswith("0:03.000")
    wanted = ["a blue square and a yellow star on a gray background"]
    assert drawn_cues(page, wanted) == wanted


def drawn_cues(page: Page, wanted: list[str], seconds: float = 10.0) -> list[str]:
    """The cues drawn over the video once they are ``wanted``, or ``seconds`` after the seek
    ended, whatever is drawn then. (The cue box is drawn a frame or more after the seek
    ends, later on a loaded machine: a fixed 300 ms wait read an empty box there.)"""
    page.wait_for_function(
        """() => { const v = document.getElementById('video'), t = v.textTracks[0];
                   return v.readyState >= 2 && !v.seeking && t && t.cues && t.cues.length; }""",
        timeout=20_000,
    )
    deadline = time.monotonic() + seconds
    while (texts := cue_texts(page)) != wanted and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    return texts


def cue_texts(page: Page) -> list[str]:
    """The text of the cue boxes Chromium draws over the video now."""
    session = page.context.new_cdp_session(page.page)
    root = session.send("DOM.getDocument", {"depth": -1, "pierce": True})["root"]
    session.detach()
    texts: list[str] = []

    def walk(node: dict, in_cue: bool) -> None:
        attributes = node.get("attributes", [])
        pairs = dict(zip(attributes[::2], attributes[1::2], strict=True))
        in_cue = in_cue or pairs.get("pseudo") == "cue"  # (a cue box Chromium draws)
        if in_cue and node.get("nodeType") == 3 and node.get("nodeValue", "").strip():
            texts.append(node["nodeValue"].strip())
        for child in node.get("children", []) + node.get("shadowRoots", []):
            walk(child, in_cue)

    walk(root, False)
    return texts


def test_captions_of_any_direction_and_length_read_as_written(page: Page) -> None:
    """Regression: Arabic and Hebrew captions were set left to right; a 2,000-character
    caption made its card 1,800 px tall."""
    card = page.locator(".card[data-name=written]")
    said = card.locator(".frame .said")
    assert said.nth(0).evaluate("e => getComputedStyle(e).direction") == "rtl"
    assert said.nth(2).evaluate("e => getComputedStyle(e).direction") == "ltr"
    assert card.locator(".frame").nth(1).bounding_box()["height"] < 250
    card.locator(".frame").nth(1).click()
    assert page.text_content("#player-caption") == LONG  # the whole of it, in the player


def test_print_and_dark_and_an_empty_filter(page: Page) -> None:
    page.emulate_media(media="print")
    assert page.is_hidden("#search") and page.is_hidden("#player")
    strip = page.locator(".card[data-name=long] .strip")
    assert strip.evaluate("s => s.scrollWidth <= s.clientWidth")  # every frame on paper
    page.emulate_media(media="screen", color_scheme="dark")
    background = page.evaluate("getComputedStyle(document.querySelector('.card')).backgroundColor")
    assert sum(int(c) for c in background[4:-1].split(",")[:3]) < 3 * 80, background
    page.select_option("#status-filter", "failed")
    page.wait_for_function("document.getElementById('no-videos').textContent")
    assert page.text_content("#no-videos") == "no video is failed"
