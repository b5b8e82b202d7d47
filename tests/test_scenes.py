"""The scene generator, the video renderer and the committed sample videos."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from vidcap.tiny.build import IMAGE_SIZE, build_processor
from vidcap.tiny.grammar import BACKGROUNDS, COLOURS, SHAPES, caption_for
from vidcap.tiny.render import (
    Shot,
    TruthSegment,
    caption_at,
    read_truth,
    render_video,
    subject_ranges,
    truth_path,
    write_truth,
)
from vidcap.tiny.scenes import (
    COLOUR_RGB,
    MIN_SIZE,
    QUESTION_FORMS,
    canonical_order,
    draw_scene,
    make_example,
    make_examples,
    question_for,
    random_question,
    random_scene,
    to_model_image,
)

SAMPLES = Path(__file__).resolve().parents[1] / "sample_videos"
OBJECT = rf"a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})"
CAPTION = re.compile(rf"^{OBJECT}(?: and {OBJECT})? on a ({'|'.join(BACKGROUNDS)}) background$")


def test_examples_are_deterministic_per_seed() -> None:
    first, again, other = make_examples(3, 20), make_examples(3, 20), make_examples(4, 20)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again, strict=True))
    assert [a.caption for a in first] == [b.caption for b in again]
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))


def test_same_colour_pairs_for_training() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        example = make_example(rng, same_colour_fraction=1.0)
        colours = {colour for colour, _ in example.scene.objects}
        assert len(example.scene.shapes) == 2 and len(colours) == 1


def test_examples_are_model_size_rgb() -> None:
    for example in make_examples(0, 10):
        assert example.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert example.image.dtype == np.uint8


@pytest.mark.heavy
def test_captions_follow_grammar_in_canonical_order() -> None:
    examples = make_examples(1, 300)
    assert {len(e.scene.shapes) for e in examples} == {1, 2}
    assert {e.scene.background for e in examples} == set(BACKGROUNDS)
    left_first = 0
    for example in examples:
        match = CAPTION.match(example.caption)
        assert match, example.caption
        named = [(match[1], match[2])] + ([(match[3], match[4])] if match[3] else [])
        assert named == canonical_order([(s.colour, s.kind) for s in example.scene.shapes])
        assert len(set(named)) == len(named)
        if len(named) == 2:
            left = min(example.scene.shapes, key=lambda s: s.cx)
            left_first += named[0] == (left.colour, left.kind)
    pairs = sum(len(e.scene.shapes) == 2 for e in examples)
    assert 0.3 < left_first / pairs < 0.7  # caption order says nothing about position


def test_canonical_order_is_colour_then_shape() -> None:
    assert canonical_order([("blue", "circle"), ("red", "star")]) == [
        ("red", "star"),
        ("blue", "circle"),
    ]
    assert canonical_order([("red", "star"), ("red", "square")]) == [
        ("red", "square"),
        ("red", "star"),
    ]
    assert caption_for(canonical_order([("yellow", "star"), ("green", "circle")]), "gray") == (
        "a green circle and a yellow star on a gray background"
    )


def test_shapes_are_big_inside_and_apart() -> None:
    rng = np.random.default_rng(5)
    for aspect in (4 / 3, 16 / 9):
        for _ in range(200):
            scene = random_scene(rng, aspect=aspect)
            boxes = []
            for shape in scene.shapes:
                half_w, half_h = shape.half_extent(aspect)
                assert shape.size >= MIN_SIZE * 0.99
                assert 0 < shape.cx - half_w and shape.cx + half_w < 1
                assert 0 < shape.cy - half_h and shape.cy + half_h < 1
                boxes.append((shape.cx - half_w, shape.cx + half_w))
            if len(boxes) == 2:
                (_, left_end), (right_start, _) = sorted(boxes)
                assert right_start - left_end > 0.05


def test_every_shape_is_visible_at_model_size() -> None:
    rng = np.random.default_rng(9)
    for _ in range(50):
        scene = random_scene(rng, aspect=640 / 360)
        image = to_model_image(draw_scene(scene, 640, 360)).astype(int)
        for shape in scene.shapes:
            close = np.abs(image - np.array(COLOUR_RGB[shape.colour])).sum(axis=2) < 60
            assert close.sum() >= 40, (scene.caption, close.sum())


@pytest.mark.heavy
def test_questions_answer_from_the_scene() -> None:
    rng = np.random.default_rng(2)
    answers = []
    for example in make_examples(2, 200):
        prompt, answer = random_question(rng, example.scene)
        words = prompt.replace("?", " ").split()
        colour, kind = words[4], words[5]
        assert prompt in {question_for(colour, kind, form) for form in range(len(QUESTION_FORMS))}
        assert answer == ("yes" if example.scene.contains(colour, kind) else "no")
        answers.append(answer)
    assert 0.35 < answers.count("yes") / len(answers) < 0.65


def test_prompt_as_typed_has_no_unknown_tokens() -> None:
    tok = build_processor().tokenizer
    for form in range(len(QUESTION_FORMS)):
        ids = tok(question_for("red", "circle", form))["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.convert_ids_to_tokens(ids)[1:3] == ["question", ":"]
        assert tok.convert_ids_to_tokens(ids)[-2:] == ["answer", ":"]


def _decode(path: Path) -> tuple[int, float, float, str, str]:
    """(frames, first pts s, last pts s, codec, pixel format) of the first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(frame.time) for frame in container.decode(stream)]
        return len(times), times[0], times[-1], stream.codec_context.name, stream.format.name


@pytest.mark.parametrize(("codec", "suffix"), [("libx264", ".mp4"), ("mpeg4", ".avi")])
def test_rendered_video_matches_its_truth(tmp_path: Path, codec: str, suffix: str) -> None:
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng, aspect=160 / 120) for _ in range(3)]
    segments = [
        Shot(scene, duration) for scene, duration in zip(scenes, (1.0, 1.5, 0.8), strict=True)
    ]
    video = tmp_path / f"clip{suffix}"
    truth = render_video(video, segments, fps=10, size=(160, 120), codec=codec, seed=1)
    assert [t.caption for t in truth] == [s.caption for s in scenes]
    assert [(t.start, t.end) for t in truth] == [(0.0, 1.0), (1.0, 2.5), (2.5, 3.3)]
    frames, first, last, name, pix_fmt = _decode(video)
    assert (frames, first, name, pix_fmt) == (
        33,
        0.0,
        "h264" if codec == "libx264" else codec,
        "yuv420p",
    )
    assert last == pytest.approx(truth[-1].end - 0.1)
    write_truth(truth_path(video), truth)
    assert truth_path(video).name == "clip.truth.json"
    assert read_truth(truth_path(video)) == truth


def test_truth_helpers() -> None:
    truth = [
        TruthSegment(0.0, 2.0, "a blue square on a white background"),
        TruthSegment(2.0, 4.0, "a red circle on a gray background"),
        TruthSegment(4.0, 5.0, "a red circle and a green star on a gray background"),
        TruthSegment(5.0, 6.0, "a red square on a gray background"),
    ]
    assert subject_ranges(truth, "red circle") == [(2.0, 5.0)]
    assert caption_at(truth, 4.99) == truth[2].caption
    assert caption_at(truth, 6.0) is None


@pytest.mark.parametrize("name", ["shapes", "subject"])
def test_committed_samples_are_small_and_consistent(name: str) -> None:
    video = SAMPLES / f"{name}.mp4"
    truth = read_truth(truth_path(video))
    assert video.stat().st_size <= 300 * 1024
    assert truth[0].start == 0.0
    assert all(a.end == b.start for a, b in zip(truth[:-1], truth[1:], strict=True))
    assert all(CAPTION.match(t.caption) for t in truth)
    frames, first, last, name_, pix_fmt = _decode(video)
    assert (first, name_, pix_fmt) == (0.0, "h264", "yuv420p")
    assert frames == round(truth[-1].end * 10)
    assert last == pytest.approx(truth[-1].end - 0.1)


def test_subject_sample_has_the_documented_ranges() -> None:
    truth = read_truth(SAMPLES / "subject.truth.json")
    assert subject_ranges(truth, "red circle") == [
        (3.0, 7.0),
        (11.0, 15.0),
        (23.0, 27.0),
        (30.0, 34.0),
    ]
    assert truth[-1].end == 34.0
    for segment in truth:
        if "red circle" not in segment.caption:
            assert "red" not in segment.caption, segment.caption
