"""The shipped tiny checkpoint really captions: held-out scenes, question mode, sample videos."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from vidcap.tiny import CHECKPOINT_DIR
from vidcap.tiny.build import build_processor
from vidcap.tiny.render import caption_at, read_truth, truth_path
from vidcap.tiny.scenes import (
    QUESTION_FORMS,
    make_examples,
    question_for,
    random_question,
    to_model_image,
)
from vidcap.tiny.train import (
    EVAL_SEED,
    IGNORE,
    TRAIN_SEED,
    answer_questions,
    encode_batch,
    object_targets,
    pixel_values,
)

SAMPLES = Path(__file__).resolve().parents[1] / "sample_videos"
HELD_OUT = 300


@pytest.fixture(scope="module")
def processor() -> Blip2Processor:
    return Blip2Processor.from_pretrained(CHECKPOINT_DIR)


@pytest.fixture(scope="module")
def model() -> Blip2ForConditionalGeneration:
    torch.set_num_threads(2)
    return Blip2ForConditionalGeneration.from_pretrained(CHECKPOINT_DIR).eval()


@torch.no_grad()
def captions(
    model: Blip2ForConditionalGeneration, processor: Blip2Processor, images: list
) -> list[str]:
    inputs = processor(images=images, return_tensors="pt")
    out = model.generate(pixel_values=inputs["pixel_values"], max_new_tokens=24)
    return [text.strip() for text in processor.batch_decode(out, skip_special_tokens=True)]


@torch.no_grad()
def answers(
    model: Blip2ForConditionalGeneration,
    processor: Blip2Processor,
    images: list,
    prompts: list[str],
) -> list[str]:
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    out = model.generate(**inputs, max_new_tokens=3)
    new = out[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new, skip_special_tokens=True)]


def test_training_pixels_match_the_processor() -> None:
    processor = build_processor()
    examples = make_examples(0, 8)
    expected = processor(images=[e.image for e in examples], return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixel_values(processor, examples), expected, atol=1e-5)


def test_training_sequences_label_only_the_answer() -> None:
    processor = build_processor()
    tok = processor.tokenizer
    caption = "a red circle on a white background"
    batch = encode_batch(processor, ["", question_for("red", "circle")], [caption, "yes"])
    ids, labels = batch["input_ids"], batch["labels"]
    image = tok.convert_tokens_to_ids("<image>")
    assert ids[:, : processor.num_query_tokens].eq(image).all()
    assert ids[0, processor.num_query_tokens] == tok.eos_token_id  # BOS, as generate() starts
    assert tok.convert_ids_to_tokens(labels[0][labels[0] != IGNORE].tolist()) == [
        *caption.split(),
        "</s>",
    ]
    assert tok.convert_ids_to_tokens(labels[1][labels[1] != IGNORE].tolist()) == ["yes", "</s>"]
    assert labels[0][batch["attention_mask"][0] == 0].eq(IGNORE).all()
    # inference builds the same prefix: processor(images, text=prompt)
    prompt = processor(images=[np.zeros((64, 64, 3), np.uint8)], text=question_for("red", "circle"))
    assert prompt["input_ids"][0] == ids[1, : len(prompt["input_ids"][0])].tolist()


def test_object_targets_hold_pairs_and_background() -> None:
    examples = make_examples(0, 20)
    targets = object_targets(examples)
    for row, example in zip(targets, examples, strict=True):
        assert row.sum() == len(example.scene.shapes) + 1


def test_checkpoint_is_small_and_standard() -> None:
    names = {p.name for p in CHECKPOINT_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in names)
    assert sum(p.stat().st_size for p in CHECKPOINT_DIR.iterdir()) <= 10 * 1024 * 1024


@pytest.mark.heavy
def test_captions_held_out_scenes(model, processor) -> None:
    assert EVAL_SEED != TRAIN_SEED
    examples = make_examples(EVAL_SEED, HELD_OUT)
    got = captions(model, processor, [e.image for e in examples])
    wrong = [(g, e.caption) for g, e in zip(got, examples, strict=True) if g != e.caption]
    accuracy = 1 - len(wrong) / len(examples)
    assert accuracy >= 0.95, f"{accuracy:.1%} exact match; misses: {wrong[:10]}"


@pytest.mark.heavy
def test_answers_questions_on_held_out_scenes(model, processor) -> None:
    """Both trained prompt forms; half the questions are near misses (right colour or shape)."""
    examples = make_examples(EVAL_SEED + 1, 200)
    rng = np.random.default_rng(EVAL_SEED + 2)
    questions = [random_question(rng, e.scene) for e in examples]
    got = answer_questions(model, processor, [e.image for e in examples], [q for q, _ in questions])
    assert set(got) <= {"yes", "no"}
    accuracy = np.mean([g == truth for g, (_, truth) in zip(got, questions, strict=True)])
    assert accuracy >= 0.90, f"{accuracy:.1%} correct"


def test_question_prompt_as_users_type_it(model, processor) -> None:
    """ "Question: ... Answer:" with capitals and punctuation: no <unk>, and a yes/no answer."""
    example = make_examples(EVAL_SEED + 3, 1)[0]
    colour, kind = example.scene.objects[0]
    for form in range(len(QUESTION_FORMS)):
        prompt = question_for(colour, kind, form)
        assert processor.tokenizer.unk_token_id not in processor.tokenizer(prompt)["input_ids"]
        assert answers(model, processor, [example.image], [prompt]) == ["yes"]


@pytest.mark.parametrize("name", ["shapes", "subject"])
def test_captions_sample_video_frames(model, processor, name: str) -> None:
    """Two frames a second of the committed samples, decoded by PyAV, captioned correctly."""
    video = SAMPLES / f"{name}.mp4"
    truth = read_truth(truth_path(video))
    images, expected = [], []
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            seconds = float(frame.time)
            if index % 5 == 2:  # 0.2 s, 0.7 s, ... at 10 fps: never on a scene change
                images.append(to_model_image(frame.to_ndarray(format="rgb24")))
                expected.append(caption_at(truth, seconds))
    got = captions(model, processor, images)
    wrong = [(g, e) for g, e in zip(got, expected, strict=True) if g != e]
    assert len(wrong) <= len(expected) // 20, wrong


def test_a_wider_tokenizer_keeps_the_tiny_ids_and_reads_every_other_id_as_a_word() -> None:
    """bench/blip2_sized.py's model has OPT's 50,272 ids: each decodes to a word (``w<id>``),
    so its captions are text to compare, and the tiny grammar's ids stay where they were."""
    tiny, wide = build_processor().tokenizer, build_processor(50272).tokenizer
    assert len(tiny) < 100 and len(wide) == 50272
    assert wide.get_vocab().items() >= tiny.get_vocab().items()
    caption = "a red circle"
    ids = tiny(caption, add_special_tokens=False)["input_ids"]
    assert wide.decode([*ids, 777, 50271]) == f"{caption} w777 w50271"


@pytest.mark.slow  # three runs in new processes (the cache is read at import)
def test_a_hub_model_is_pinned_to_one_commit_and_recorded(tmp_path: Path) -> None:
    """Regression: a run recorded a hub model by its name only, and each replica loaded
    whatever commit its machine's cache held: after the model was updated (a new commit on
    the hub, downloaded on one machine of a Ray cluster, or before a rerun), one folder held
    captions of two commits, recorded as one model. The run now takes one commit (the
    cache's ``main``), loads it everywhere, records it with each video, and redoes a video
    captioned with another."""
    import json
    import subprocess
    import sys

    from tests.support.hub import HUB_ID, hub_env, hub_snapshot

    first, second = "a" * 40, "b" * 40
    cache = tmp_path / "hub"
    hub_snapshot(cache, first)
    env = hub_env(cache)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vidcap", "caption", str(SAMPLES), "--out", str(out),
               "--model", HUB_ID, "--quiet"]  # fmt: skip

    def run() -> tuple[list[tuple[str, str | None]], str]:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        summary = json.loads((out / "summary.json").read_text())
        return [(v["model"], v.get("revision")) for v in summary["videos"]], done.stderr

    videos, _ = run()
    assert videos == [("vidcap-test/tiny", first)] * 2
    hub_snapshot(cache, second)  # the model updated: main is another commit now
    videos, stderr = run()
    assert videos == [("vidcap-test/tiny", second)] * 2
    assert f"2 videos of {out} were captioned with revision {first}" in stderr
    videos, stderr = run()  # nothing changed: nothing redone
    assert videos == [("vidcap-test/tiny", second)] * 2 and "redone" not in stderr
    records = [json.loads(p.read_text()) for p in (out / ".vidcap").glob("*.json")]
    assert sorted(r["result"]["revision"] for r in records if "result" in r) == [second] * 2


def test_a_local_checkpoint_has_no_revision_and_a_named_one_is_kept() -> None:
    from vidcap.model import pinned
    from vidcap.settings import ModelSettings

    assert pinned(ModelSettings(model="tiny")).revision is None
    assert pinned(ModelSettings(model=str(CHECKPOINT_DIR))).revision is None
    assert pinned(ModelSettings(model="x/y", revision="c" * 40)).revision == "c" * 40
