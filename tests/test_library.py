"""vidcap as a library: what a caller passes wrongly is a clear error at the call, before any
work, never a traceback deep inside, an empty result or a run that writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidcap.backend import EmbeddedBackend
from vidcap.decode import Failed
from vidcap.decode_pool import DecodePool
from vidcap.engine import caption_video
from vidcap.errors import UsageError
from vidcap.mask import MaskSettings, VideoCaptions, ask_frames, mask_captions, segments
from vidcap.outputs import CaptionedFrame
from vidcap.ray import RaySettings
from vidcap.settings import (
    EngineSettings,
    GenerationSettings,
    ModelSettings,
    SamplingSettings,
)

SAMPLE = Path(__file__).resolve().parent.parent / "sample_videos" / "subject.mp4"


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda: SamplingSettings(every_n=1.5), "SamplingSettings.every_n must be a whole number"),
        (lambda: SamplingSettings(fps="2"), "SamplingSettings.fps must be a number or None"),
        (lambda: SamplingSettings(keyframes=1), "SamplingSettings.keyframes must be true or"),
        (lambda: SamplingSettings(every_n=True), "SamplingSettings.every_n must be a whole"),
        (lambda: ModelSettings(device=0), "ModelSettings.device must be a string, got 0"),
        (lambda: GenerationSettings(num_beams="2"), "GenerationSettings.num_beams must be a"),
        (lambda: EngineSettings(decode_timeout="5"), "EngineSettings.decode_timeout must be"),
        (lambda: MaskSettings(merge_gap="1"), "MaskSettings.merge_gap must be a number"),
        (lambda: RaySettings(actors="2"), "RaySettings.actors must be a whole number"),
    ],
)
def test_a_setting_of_the_wrong_type_is_named(make, said: str) -> None:
    """Regression: ``SamplingSettings(every_n=1.5)`` was taken and failed each video with
    "TypeError: slice indices must be integers"; ``fps="2"`` and the others raised a
    TypeError from a comparison inside."""
    with pytest.raises(UsageError, match=said):
        make()


def test_settings_take_numbers_of_any_kind_as_plain_values() -> None:
    """What a caller may mean plainly is taken, as the plain Python value a decoder process
    is sent as JSON (a NumPy ``every_n`` passed the check, then failed each video: "Object of
    type int64 is not JSON serializable"); ``20.0`` tokens, a ``Decimal`` rate and a path to
    a model worked before the checks, and still do."""
    from decimal import Decimal

    np = pytest.importorskip("numpy")
    for made, field, plain in (
        (SamplingSettings(fps=2), "fps", 2),
        (SamplingSettings(every_n=np.int64(10)), "every_n", 10),
        (SamplingSettings(fps=Decimal("0.5")), "fps", 0.5),
        (SamplingSettings(fps=np.float32(2.0)), "fps", 2.0),
        (GenerationSettings(max_new_tokens=20.0), "max_new_tokens", 20),
        (ModelSettings(model=Path("ck"), batch_size=np.int64(4)), "model", "ck"),
    ):
        value = getattr(made, field)
        assert value == plain and type(value) is type(plain), (made, field)
    with pytest.raises(UsageError, match="max_new_tokens must be a whole number, got 20.5"):
        GenerationSettings(max_new_tokens=20.5)


def test_caption_dataset_refuses_bad_arguments_before_starting_anything(tmp_path: Path) -> None:
    """Regression: ``formats=("json",)`` (or ``"jsonl"``, taken letter by letter) ran the
    model over every video on a Ray cluster and reported each done, writing no caption
    file; ``ray_settings={...}`` raised an AttributeError and left the folder's lock; a
    single path given as a string was read as its characters ("no such file: p")."""
    from vidcap.ray import caption_dataset

    out = tmp_path / "out"
    for formats, said in ((("json",), "unknown --format json"), ("jsonl,nope", "--format nope")):
        with pytest.raises(UsageError, match=said):
            caption_dataset([SAMPLE], out, formats=formats)
    with pytest.raises(TypeError, match="ray_settings must be a RaySettings or None, got {}"):
        caption_dataset([SAMPLE], out, ray_settings={})
    with pytest.raises(TypeError, match="model must be a ModelSettings or None, got 'tiny'"):
        caption_dataset([SAMPLE], out, model="tiny")  # type: ignore[arg-type]
    assert not out.exists()
    with pytest.raises(UsageError, match=r"gone\.mp4"):  # (one path: the path, not "g")
        caption_dataset(str(tmp_path / "gone.mp4"), out)
    # (an outside-in round: out="" wrote into the working folder and out=None into a folder
    # named None; an input "" is the working folder to Path; no input at all failed deep)
    for wrong, error, said in (
        ({"out": ""}, UsageError, "out: an empty path"),
        ({"out": None}, TypeError, "out must be a folder's path or an fsspec URL, got None"),
        ({"inputs": [""]}, UsageError, "an input is an empty path"),
        ({"inputs": None}, TypeError, "inputs must be paths, URLs or InputVideos, got None"),
    ):
        with pytest.raises(error, match=said):
            caption_dataset(**{"inputs": [SAMPLE], "out": out, **wrong})  # type: ignore[arg-type]
    assert not out.exists()


def test_a_caption_dataset_that_cannot_start_leaves_no_folder_it_made(tmp_path: Path) -> None:
    """Regression (an outside-in round): a run that could not start (here, no such model)
    left the folder it made holding only ``.vidcap/run.lock``, where the CLI removes it. A
    folder that was there before stays, with what it holds."""
    from vidcap.errors import ModelLoadError
    from vidcap.ray import caption_dataset

    gone = ModelSettings(model=str(tmp_path / "no-model"))
    out = tmp_path / "out"
    with pytest.raises(ModelLoadError, match="no such directory"):
        caption_dataset([SAMPLE], out, model=gone, quiet=True)
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(ModelLoadError):
        caption_dataset([SAMPLE], kept, model=gone, quiet=True)
    assert kept.is_dir()


def test_caption_dataset_takes_a_generator_of_paths(tmp_path: Path) -> None:
    """Regression (an outside-in round): ``Path.glob(...)`` was read once to check the
    inputs and found empty after: "no videos found in the given inputs". An iterable is
    read once, as a list: here into the same refusal of a missing file as a list gives."""
    from vidcap.ray import caption_dataset

    with pytest.raises(UsageError, match=r"gone\.mp4"):
        caption_dataset((p for p in [tmp_path / "gone.mp4"]), tmp_path / "out")


def test_caption_video_refuses_settings_that_are_not_settings(tiny_captioner) -> None:
    """Regression: ``caption_video(path, backend, None, …)`` printed a decoder thread's
    traceback and returned no frames, as if the video had none."""
    backend = EmbeddedBackend(tiny_captioner)
    try:
        for sampling, generation in ((None, GenerationSettings()), ("fps=1", GenerationSettings()),
                                     (SamplingSettings(), {"max_new_tokens": 5})):  # fmt: skip
            with pytest.raises(TypeError, match="must be a (Sampling|Generation)Settings"):
                list(caption_video(SAMPLE, backend, sampling, generation))  # type: ignore[arg-type]
    finally:
        backend.close()


def test_a_job_the_pool_cannot_hand_its_decoder_fails_saying_why() -> None:
    """A job the decode pool fails to hand its decoder process (here: settings that do not
    serialise) fails with a reason; it was lost with the pool's thread, and the run ended
    with no result for it."""
    sampling = SamplingSettings()
    object.__setattr__(sampling, "fps", object())  # (past the checks: any failure to hand over)
    pool = DecodePool([(0, str(SAMPLE))], sampling, (32, 32), 1, 16)
    try:
        events = list(pool.events())
    finally:
        pool.close()
    [failed] = events
    assert (
        isinstance(failed, Failed) and "the decoder could not be driven (TypeError" in failed.error
    )


def test_mask_queries_and_times_given_wrongly() -> None:
    """Regression: a query given as a string was matched letter by letter ("red": no
    segments; "red circle": "--query must not be empty"); unsorted or NaN times said
    "cannot infer the video's duration from a single frame time"."""
    frames = tuple(CaptionedFrame(i, float(i), c) for i, c in enumerate(["a red circle", "x"]))
    captions = VideoCaptions("v.mp4", frames)
    one = mask_captions(captions, "red circle", MaskSettings(duration=2.0))
    assert one == mask_captions(captions, ["red circle"], MaskSettings(duration=2.0))
    assert one["segments"] == [{"start": 0.0, "end": 1.0, "frames": 1, "damaged": 0}]
    for times in ([0.0, 2.0, 1.0], [0.0, float("nan"), 2.0]):
        with pytest.raises(ValueError, match="times must be finite numbers of seconds, in time"):
            segments(times, [True, False, True])


def test_ask_frames_with_sampling_that_makes_thumbnails_or_scenes(tiny_captioner) -> None:
    """Regression: ``ask_frames`` with ``SamplingSettings(thumb_height=…)`` or ``scenes=True``
    failed with "'Thumbnail' object has no attribute 'duration'"."""
    backend = EmbeddedBackend(tiny_captioner)
    try:
        for sampling in (SamplingSettings(every_n=100, thumb_height=90),
                         SamplingSettings(scenes=True)):  # fmt: skip
            answers = ask_frames(SAMPLE, backend, "is there a red circle?", sampling, quiet=True)
            assert answers.frames and answers.duration == pytest.approx(34.0)
    finally:
        backend.close()


def test_a_second_caption_dataset_at_once_in_one_process_is_refused(tmp_path: Path) -> None:
    """Regression (an outside-in round): two threads each calling ``caption_dataset`` fought
    over the process's one Ray connection ("called ray.init twice?", a node timed out) and
    left Ray's agents and the folders' locks behind. The second is refused, in one line,
    before it makes anything."""
    from vidcap import ray as vidcap_ray

    with vidcap_ray._ONE_RUN:  # (a run going on in another thread holds it)
        with pytest.raises(UsageError, match="already running in this process"):
            vidcap_ray.caption_dataset([SAMPLE], tmp_path / "out")
    assert not (tmp_path / "out").exists()
