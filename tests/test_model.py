"""The Captioner on the tiny checkpoint, loaded through the real from_pretrained path."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import run_main
from vidcap.cli import main
from vidcap.errors import ModelLoadError, UsageError
from vidcap.frames import Frame, resize_for_model
from vidcap.model import BLIP2_INPUT_SIZE, Captioner, model_input_size
from vidcap.settings import GenerationSettings, ModelSettings
from vidcap.tiny.scenes import draw_scene, random_scene


def scene_images(n: int, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [draw_scene(random_scene(rng), 320, 240, rng) for _ in range(n)]


def test_tiny_captions_a_batch(tiny_captioner: Captioner) -> None:
    images = scene_images(5)
    captions = tiny_captioner.caption(images)
    assert len(captions) == 5
    assert all(isinstance(c, str) and c for c in captions)


def test_batch_size_does_not_change_captions(tiny_captioner: Captioner) -> None:
    images = scene_images(6)
    small = Captioner(tiny_captioner.processor, tiny_captioner.model, "cpu", batch_size=2)
    assert small.caption(images) == tiny_captioner.caption(images)


def test_any_input_size_is_resized_once(tiny_captioner: Captioner) -> None:
    image = scene_images(1)[0]
    resized = resize_for_model(image, tiny_captioner.input_size)
    assert resized.shape == (*tiny_captioner.input_size, 3)
    assert tiny_captioner.caption([image]) == tiny_captioner.caption([resized])


def test_prompt_is_not_echoed(tiny_captioner: Captioner) -> None:
    prompt = "Question: is there a red circle in this picture? Answer:"
    answers = tiny_captioner.caption(
        scene_images(3), GenerationSettings(prompt=prompt, max_new_tokens=2)
    )
    assert all("question" not in a.lower() for a in answers)


def test_an_empty_prompt_is_no_prompt_with_its_settings_key(
    tiny_captioner: Captioner, tmp_path: Path
) -> None:
    """Regression (an outside-in round): ``--prompt ""`` captioned as no prompt does, but
    had a settings key of its own, so a folder done without a prompt was captioned again."""
    from vidcap.jobs import RunSettings

    empty, none = GenerationSettings(prompt=""), GenerationSettings()
    assert empty == none and empty.prompt is None
    images = scene_images(2)
    assert tiny_captioner.caption(images, empty) == tiny_captioner.caption(images)
    keys = [RunSettings(out_dir=tmp_path, generation=g).key() for g in (empty, none)]
    assert keys[0] == keys[1]


def test_input_size_known_without_loading(tiny_captioner: Captioner) -> None:
    """What clients resize to before loading anything must be what the model loads with."""
    assert model_input_size("tiny") == tiny_captioner.input_size == (64, 64)


@pytest.mark.parametrize(
    ("name", "config", "expected"),
    [
        ("preprocessor_config.json", {"size": {"height": 96, "width": 128}}, (96, 128)),
        ("processor_config.json", {"image_processor": {"size": {"height": 80, "width": 40}}},
         (80, 40)),
        ("preprocessor_config.json", {"size": {"shortest_edge": 300}}, BLIP2_INPUT_SIZE),
    ],
    ids=["preprocessor", "processor", "no-height-width"],
)  # fmt: skip
def test_input_size_read_from_a_local_model_directory(
    tmp_path: Path, name: str, config: dict, expected: tuple[int, int]
) -> None:
    (tmp_path / name).write_text(json.dumps(config))
    assert model_input_size(str(tmp_path)) == expected


def test_tiny_model_command_writes_a_loadable_checkpoint(tmp_path: Path, tiny_captioner) -> None:
    out = tmp_path / "tiny"
    assert main(["tiny-model", str(out)]) == 0
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()
    copy = Captioner.load(ModelSettings(model=str(out), device="cpu"))
    images = scene_images(3)
    assert copy.caption(images) == tiny_captioner.caption(images)
    assert main(["tiny-model", str(out)]) == 2  # not empty any more


def test_untrained_tiny_model_builds_offline(tmp_path: Path) -> None:
    out = tmp_path / "random"
    assert main(["tiny-model", str(out), "--untrained"]) == 0
    captioner = Captioner.load(ModelSettings(model=str(out), device="cpu"))
    assert len(captioner.caption(scene_images(2))) == 2


def test_untrained_weights_are_readable_like_the_others(tmp_path: Path) -> None:
    out = tmp_path / "random"
    assert main(["tiny-model", str(out), "--untrained", "--seed", "3"]) == 0
    modes = {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] != 0o600, modes


def test_a_checkpoint_cut_short_leaves_nothing_and_a_rerun_writes_it(tmp_path: Path) -> None:
    """A full disk (here: a file-size limit, EFBIG) while the checkpoint is written: one line,
    exit 1, no half-written folder for ``--model`` to load later, and the rerun is not refused."""
    out = tmp_path / "ck"

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    command = [sys.executable, "-m", "vidcap", "tiny-model", str(out)]
    cut = subprocess.run(command, capture_output=True, text=True, preexec_fn=small_files)
    assert cut.returncode == 1, cut.stderr
    assert cut.stderr.strip().splitlines() == [
        f"vidcap: error: cannot write the checkpoint to {out}: File too large"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert main(["tiny-model", str(out)]) == 0
    assert (out / "model.safetensors").stat().st_size > 200_000


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--untrained", "--seed", "99999999999999999999"], "--seed must be a whole number"),
        (["--untrained", "--seed", "-1"], "--seed must be a whole number"),
        (["--seed", "5"], "--seed applies to --untrained only"),
    ],
    ids=["overflow", "negative", "without-untrained"],
)
def test_a_bad_seed_is_a_usage_error(tmp_path: Path, extra: list[str], said: str) -> None:
    result = run_main("tiny-model", tmp_path / "m", *extra)
    assert result.returncode == 2 and said in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_a_link_to_nothing_or_a_file_in_the_way_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "file").write_text("x")
    for target, said in ((tmp_path / "dangling", "a link to nothing"),
                         (tmp_path / "file" / "sub", "is a file, not a folder")):  # fmt: skip
        result = run_main("tiny-model", target)
        assert result.returncode == 2 and said in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    linked = tmp_path / "linked"
    (tmp_path / "empty").mkdir()
    linked.symlink_to(tmp_path / "empty")
    assert main(["tiny-model", str(linked)]) == 0
    assert (tmp_path / "empty" / "config.json").is_file() and linked.is_symlink()


def test_unreachable_hub_model_fails_fast_with_advice(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="--model /path/to/blip2") as info:
        Captioner.load(ModelSettings(model="Salesforce/blip2-opt-2.7b", device="cpu"))
    assert time.monotonic() - started < 10
    assert "\n" not in str(info.value)
    # the download command it names is one this install has (huggingface_hub 1.0 dropped
    # `huggingface-cli` for `hf`)
    import re
    import shutil
    import sys

    [command] = re.findall(
        r"\((\S+) download Salesforce/blip2-opt-2\.7b --local-dir /path/to/blip2\)", str(info.value)
    )  # (--local-dir: plain `hf download` fills the cache, not the folder --model is given)
    assert shutil.which(command, path=str(Path(sys.executable).parent)), command


@pytest.mark.parametrize(
    ("model", "message"),
    [("/definitely/not/here", "no such directory"), (".", "no config.json")],
)
def test_bad_model_paths(model: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        Captioner.load(ModelSettings(model=model, device="cpu"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "gpu"}, "supported values are"),
        ({"dtype": "int8"}, "supported values are"),
        ({"batch_size": 0}, "--batch-size"),
    ],
)
def test_bad_model_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ModelSettings(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 10_000}, "max_new_tokens"),
        ({"num_beams": 0}, "num_beams"),
        ({"prompt": "x" * 1000}, "prompt"),
    ],
)
def test_bad_generation_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        GenerationSettings(**kwargs)


def test_cuda_asked_for_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(UsageError, match="CUDA is not available"):
        Captioner.load(ModelSettings(model="tiny", device="cuda:0"))


@pytest.mark.needs_cuda
def test_fp16_on_cuda_matches_shapes() -> None:
    captioner = Captioner.load(ModelSettings(model="tiny", device="cuda"))
    assert str(captioner.dtype) == "torch.float16"
    assert len(captioner.caption(scene_images(4))) == 4


def test_frame_container_checks_shape() -> None:
    with pytest.raises(ValueError, match="uint8"):
        Frame(0, 0.0, np.zeros((4, 4), dtype=np.uint8))


@pytest.mark.heavy
def test_a_local_model_folder_is_known_by_where_it_is_not_how_it_is_spelled(
    tmp_path: Path, monkeypatch
) -> None:
    """Regression: a local ``--model`` folder keyed a run's outputs by its spelling: ``ck``
    in another working directory (another checkpoint) resumed the first one's captions,
    and ``./ck/`` of the same one captioned everything again. It is known by its absolute
    path."""
    from vidcap.tiny import CHECKPOINT_DIR

    for place in ("a", "b"):
        shutil.copytree(CHECKPOINT_DIR, tmp_path / place / "ck")
    out = tmp_path / "out"
    video = Path(__file__).resolve().parent.parent / "sample_videos" / "shapes.mp4"

    def caption(model: str) -> dict:
        result = run_main("caption", video, "--model", model, "--out", out, "--max-frames", "1",
                          "--quiet")  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads((out / "summary.json").read_text())

    monkeypatch.chdir(tmp_path / "a")
    assert caption("ck")["videos"][0]["model"] == str(tmp_path / "a" / "ck")
    assert caption("./ck/")["run"]["resumed"] == 1  # (the same folder)
    monkeypatch.chdir(tmp_path / "b")
    again = caption("ck")
    assert again["run"]["resumed"] == 0 and again["run"]["done"] == 1  # (another checkpoint)


def test_an_empty_folder_is_filled_in_place(tmp_path: Path, monkeypatch) -> None:
    """Regression: the checkpoint, staged beside DIR, replaced an empty DIR: that needs the
    parent's write permission (a folder made for the user in a shared one: refused, where
    writing into DIR had worked), cannot replace a mount point, and ``tiny-model .`` left the
    shell in a removed folder. An empty DIR is filled in place, staged inside it."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["tiny-model", "."]) == 0
    assert (here / "config.json").is_file() and Path.cwd() == here
    assert sorted(p.name for p in here.iterdir() if p.name.startswith(".")) == []


def test_a_checkpoint_with_damaged_weights_is_one_line_in_the_cli_and_the_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (outside-in round 61): weights cut short (a full disk, a copy stopped
    part-way) raised safetensors' own error, not an ``OSError``: ``vidcap caption --model``
    and a Flask server restarted on them printed a 40-line traceback (gunicorn's "Worker
    failed to boot"). Both now say it in one line; the server's worker exits with gunicorn's
    "App failed to load" status."""
    from gunicorn.arbiter import Arbiter

    from vidcap.model import CHECKPOINT_DIR
    from vidcap.serve.flask_app import create_app_from_env

    broken = tmp_path / "broken"
    shutil.copytree(CHECKPOINT_DIR, broken)
    with open(broken / "model.safetensors", "r+b") as weights:
        weights.truncate(1000)
    said = r"cannot load model from '.*broken': not a BLIP-2 checkpoint, or a damaged one \("
    with pytest.raises(ModelLoadError, match=said):
        Captioner.load(ModelSettings(model=str(broken), device="cpu"))
    env = {"VIDCAP_MODEL": str(broken), "VIDCAP_DEVICE": "cpu"}
    with pytest.raises(SystemExit) as stopped:
        create_app_from_env(env)
    assert stopped.value.code == Arbiter.APP_LOAD_ERROR
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "damaged one" in errors[0] and "\n" not in errors[0]
