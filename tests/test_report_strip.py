"""A card's strip of frames shown whole (``vidcap/report/strip.js``): a video of 150,000
samples (100 minutes at 25 frames/s, every frame: more than a lane of LANE_PX holds side by
side, so the strip scrolls in proportion), written directly (``tests.support.folders``: no
model, no decoding), in real Chromium (``tests/support/browser.py``).

Regression: "show all" appended every sample's button, 400 an animation frame, each batch
laying the whole row out again: 3.3 s for 10,800 samples, 22-31 s for 36,000, and 360,000
never finished (106,920 buttons after 150 s); a strip shown whole now holds the buttons in
(and near) view only, whatever the video's length, and the keyboard, the player and the
screen reader still reach every sample.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.browser import Page, checked_page, clock
from tests.support.folders import FakeVideo, fake_thumbs, write_folder
from vidcap.cli import main

pytestmark = pytest.mark.slow

SAMPLES = 150_000
STEP = 0.04  # 25 frames/s: frame i at i × 0.04 s
LAST = clock((SAMPLES - 1) * STEP)  # 1:39:59.960
DAMAGED = SAMPLES - 5
MOST_BUTTONS = 100  # in the strip at once (measured: 26 at 1,280 px wide)
# What the strip holds now: its buttons, those in view, and the one focused (frame numbers
# from 0, read from what a screen reader hears: "(frame 5,001 of 100,000)")
STATE = """() => {
  const strip = document.querySelector('.card[data-name=long] .strip');
  const box = strip.getBoundingClientRect();
  const index = (b) => Number(b.querySelector('.position').textContent
    .match(/frame ([\\d,]+) of/)[1].replace(/,/g, '')) - 1;
  const seen = (b) => { const r = b.getBoundingClientRect();
    return r.left >= box.left - 0.5 && r.right <= box.right + 0.5; };
  const buttons = [...strip.querySelectorAll('.frame')];
  const e = document.activeElement;
  const mine = e.closest('.strip') === strip;
  return { buttons: buttons.length, inView: buttons.filter(seen).map(index),
           focused: mine ? index(e) : null, focusedInView: mine && seen(e),
           stops: strip.querySelectorAll('[tabindex="0"]').length }; }"""


def caption(i: int) -> str:
    return f"frame {i} of the long video"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    captions = tuple(caption(i) for i in range(SAMPLES))
    video = FakeVideo("long", captions, step=STEP, rate=25, damaged=(DAMAGED,))  # (frame = i)
    out = tmp_path_factory.mktemp("strip") / "out"
    write_folder(out, [video], ("jsonl",), durable=False)
    fake_thumbs(out, "long", [*range(150), *range(SAMPLES - 40, SAMPLES)])
    assert main(["report", str(out)]) == 0
    return out


@pytest.fixture
def page(browser, folder: Path):
    yield from checked_page(browser, (folder / "index.html").as_uri())


def state(page: Page) -> dict:
    return page.evaluate(STATE)


def show_all(page: Page) -> None:
    page.locator(".card[data-name=long] .show-all").focus()
    page.keyboard.press("Enter")


def next_frame(page: Page) -> None:
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def test_a_strip_shown_whole_holds_the_buttons_in_view_and_the_keyboard_reaches_every_frame(
    page: Page, tmp_path: Path
) -> None:
    strip = page.locator(".card[data-name=long] .strip")
    assert strip.locator(".frame").count() == 120
    assert page.text_content(".show-all") == "show all 150,000 frames"
    show_all(page)
    now = state(page)
    assert page.locator(".show-all").count() == 0
    assert now["focused"] == 120 and now["focusedInView"]  # the first frame it adds
    assert now["buttons"] <= MOST_BUTTONS and now["stops"] == 1
    # End: the last frame, its time, caption, damage mark and thumbnail
    page.keyboard.press("End")
    now = state(page)
    assert now["focused"] == SAMPLES - 1 and now["focusedInView"], now
    assert now["buttons"] <= MOST_BUTTONS
    last = page.locator(".card[data-name=long] .frame:focus")
    assert last.locator(".time").text_content() == LAST
    assert last.locator(".said").text_content() == caption(SAMPLES - 1)
    assert last.locator(".position").text_content() == "(frame 150,000 of 150,000)"
    page.wait_for_function(
        "document.querySelector('.card[data-name=long] .frame:focus img').naturalWidth > 0"
    )
    damaged = strip.locator(".frame.damaged")
    assert damaged.count() == 1
    assert damaged.locator(".said").text_content() == caption(DAMAGED)
    assert damaged.locator(".flag").text_content() == "damaged"
    # Enter plays it; Escape gives the focus back to it
    page.keyboard.press("Enter")
    assert page.text_content("#player-time").startswith(LAST + " – ")
    assert page.text_content("#player-caption") == caption(SAMPLES - 1)
    page.keyboard.press("Escape")
    assert state(page)["focused"] == SAMPLES - 1
    # the arrow keys, past the buttons made: each step one frame, the strip never grows
    page.keyboard.press("Home")
    steps = page.evaluate(
        """([count, state]) => { const read = eval(state); const seen = [];
             let most = 0;
             for (let i = 0; i < count; i++) {
               document.activeElement.dispatchEvent(new KeyboardEvent('keydown',
                 {key: 'ArrowRight', bubbles: true, cancelable: true}));
               const now = read(); seen.push(now.focused);
               most = Math.max(most, now.buttons);
               if (!now.focusedInView || now.stops !== 1) return {seen, most, out: now};
             }
             return {seen, most}; }""",
        [300, STATE],
    )
    assert steps == {"seen": list(range(1, 301)), "most": steps["most"]}, steps.get("out")
    assert steps["most"] <= MOST_BUTTONS
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    assert page.text_content("#player-time").startswith(clock(299 * STEP) + " – ")
    page.keyboard.press("Escape")
    # scrolled away by the mouse: the focused frame stays (Tab comes back to it), the
    # frames in view are made, in order, none missing
    page.evaluate(
        "const s = document.querySelector('.card[data-name=long] .strip');"
        " s.scrollLeft = s.scrollWidth / 2"
    )
    next_frame(page)
    now = state(page)
    assert now["focused"] == 299 and not now["focusedInView"] and now["buttons"] <= MOST_BUTTONS
    middle = now["inView"]
    assert len(middle) >= 8 and middle == list(range(middle[0], middle[0] + len(middle)))
    assert abs(middle[0] - SAMPLES / 2) < SAMPLES / 100, middle
    page.screenshot_to(tmp_path, "report-strip-shown-whole.png")
    page.keyboard.press("Tab")
    page.keyboard.press("Shift+Tab")
    now = state(page)
    assert now["focused"] == 299 and now["focusedInView"] and now["stops"] == 1
    # scrolled away again, the arrow keys go on from the focused frame, backwards too
    page.evaluate("document.querySelector('.card[data-name=long] .strip').scrollLeft = 0")
    next_frame(page)
    page.keyboard.press("ArrowLeft")
    now = state(page)
    assert now["focused"] == 298 and now["focusedInView"] and now["stops"] == 1, now
    # to the end by the scroll bar: the last frame in view, where it should be
    page.evaluate(
        "const s = document.querySelector('.card[data-name=long] .strip');"
        " s.scrollLeft = s.scrollWidth"
    )
    next_frame(page)
    now = state(page)
    assert now["inView"][-1] == SAMPLES - 1 and now["buttons"] <= MOST_BUTTONS, now
    end = strip.locator(".frame").last
    assert end.locator(".time").text_content() == LAST
    end.click()
    assert page.text_content("#player-caption") == caption(SAMPLES - 1)


def test_a_search_reaches_a_frame_far_down_a_strip_shown_whole(page: Page) -> None:
    show_all(page)
    page.fill("#query", caption(90_000))
    page.press("#query", "Enter")
    page.wait_for_selector(".moment")
    assert page.locator(".moment").count() == 1
    page.click(".moment")
    assert page.text_content("#player-time") == f"{clock(3600.0)} – {clock(3600.04)}"
    assert page.text_content("#player-caption") == caption(90_000)
    # the cue track's last cue too
    page.locator(".card[data-name=long] .track.cues button").last.focus()
    page.keyboard.press("End")
    page.keyboard.press("Enter")
    assert page.text_content("#player-caption") == caption(SAMPLES - 1)
    assert state(page)["buttons"] <= MOST_BUTTONS


def test_a_card_drawn_again_or_a_narrower_window_keeps_the_strip_whole_and_bounded(
    page: Page,
) -> None:
    show_all(page)
    page.keyboard.press("End")
    page.select_option("#status-filter", "failed")  # the card goes, then comes back afresh
    page.wait_for_function("document.getElementById('no-videos').textContent")
    page.select_option("#status-filter", "all")
    page.wait_for_selector(".card[data-name=long] .show-all")
    assert state(page)["buttons"] == 120
    show_all(page)
    page.set_viewport_size({"width": 2400, "height": 900})  # more in view: more made
    next_frame(page)
    wide = state(page)
    shown = wide["inView"]
    assert len(shown) >= 15 and shown == list(range(shown[0], shown[0] + len(shown))), wide
    assert wide["buttons"] <= MOST_BUTTONS
    page.set_viewport_size({"width": 375, "height": 667})
    next_frame(page)
    page.keyboard.press("End")
    now = state(page)
    assert now["focused"] == SAMPLES - 1 and now["focusedInView"] and now["buttons"] < 40, now
