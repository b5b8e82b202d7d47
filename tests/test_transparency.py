"""Transparent video: a frame with an alpha plane reaches the model, the thumbnails and the
shot detector composited onto white — what BLIP-2's image processor does with a transparent
picture (``transformers.image_transforms.convert_to_rgb``) — in each container and codec
that stores alpha, WebM's included (FFmpeg's own VP8/VP9 decoders drop its alpha; libvpx's
read it). Converting such a frame straight to RGB showed whatever colour the encoder kept
under the transparent pixels: here a green the picture never shows.

References are independent of vidcap: the ffmpeg binary decodes each file to RGBA (with
libvpx for WebM, as `ffmpeg -c:v libvpx-vp9 -i` does), transformers composites it, ffprobe
lists the frames.
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import replace
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image
from transformers.image_transforms import convert_to_rgb

from tests.support.videos import ffprobe_frames
from vidcap.clips import export_clips
from vidcap.decode import Decoded, SceneFound, decode_events
from vidcap.frames import over_white, resize_for_model
from vidcap.mask import Segment
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader
from vidcap.wire import WireLimits, load_rgb, open_image

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
HEIGHT, WIDTH = 96, 128
FRAMES = 12
MODEL = (48, 48)
HIDDEN = (0, 160, 0)  # under the transparent pixels: stored, never shown
EVERY = SamplingSettings(every_n=1, mode="all")

# name → (file suffix, encoder arguments, decoder arguments for the reference, lossless RGB)
CODECS = {
    "qtrle-mov": (".mov", ["-c:v", "qtrle"], [], True),
    "png-mov": (".mov", ["-c:v", "png", "-pix_fmt", "rgba"], [], True),
    "utvideo-avi": (".avi", ["-c:v", "utvideo", "-pix_fmt", "gbrap"], [], True),
    "prores4444-mov": (
        ".mov", ["-c:v", "prores_ks", "-profile:v", "4444", "-pix_fmt", "yuva444p10le"], [], False
    ),
    "ffv1-mkv": (".mkv", ["-c:v", "ffv1", "-pix_fmt", "yuva420p"], [], False),
    "vp9-webm": (
        ".webm",
        ["-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p", "-crf", "12", "-b:v", "0", "-g", "5",
         "-deadline", "realtime", "-cpu-used", "8"],
        ["-c:v", "libvpx-vp9"], False,
    ),
    "vp8-webm": (
        ".webm",
        ["-c:v", "libvpx", "-pix_fmt", "yuva420p", "-crf", "8", "-b:v", "2M", "-g", "5",
         "-auto-alt-ref", "0"],
        ["-c:v", "libvpx"], False,
    ),
}  # fmt: skip


def rgba_frame(index: int, hidden: tuple[int, int, int] = HIDDEN) -> np.ndarray:
    """A transparent background hiding ``hidden``, a half-transparent red band, and an
    opaque blue box that moves with ``index``."""
    rgba = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
    rgba[..., :3] = hidden
    rgba[HEIGHT // 2 :, :, :] = (220, 30, 30, 128)
    left = 8 + 4 * index
    rgba[20:60, left : left + 40] = (30, 30, 220, 255)
    return rgba


def encode(path: Path, frames: list[np.ndarray], args: list[str]) -> Path:
    data = b"".join(frame.tobytes() for frame in frames)
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgba",
         "-s", f"{WIDTH}x{HEIGHT}", "-r", "10", "-i", "-", *args, str(path)],
        input=data, check=True,
    )  # fmt: skip
    return path


def reference(path: Path, decoder: list[str]) -> np.ndarray:
    """Every frame as the ffmpeg binary decodes it to RGBA, composited by transformers."""
    raw = subprocess.run(
        [FFMPEG, "-v", "error", *decoder, "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgba",
         "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    frames = np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH, 4)
    return np.stack([convert_to_rgb(frame, return_numpy=True) for frame in frames])


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("transparent")
    frames = [rgba_frame(i) for i in range(FRAMES)]
    return {
        name: encode(folder / f"{name}{suffix}", frames, args)
        for name, (suffix, args, _, _) in CODECS.items()
    }


def hidden_region(rgb: np.ndarray) -> np.ndarray:
    """The pixels that are fully transparent in every frame (top-left, above the box)."""
    return rgb[:16, :]


def test_over_white_is_what_blip2s_processor_does() -> None:
    """Every (level, alpha) pair: transformers' composite, and Pillow's alpha_composite."""
    level, alpha = np.meshgrid(np.arange(256), np.arange(256))
    pairs = np.stack([level, 255 - level, level, alpha], axis=-1).astype(np.uint8)
    ours = over_white(pairs)
    assert np.array_equal(ours, convert_to_rgb(pairs, return_numpy=True))
    image = Image.fromarray(pairs, "RGBA")
    pillow = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    assert np.array_equal(ours, np.asarray(pillow.convert("RGB")))
    with pytest.raises(ValueError, match="over_white takes"):
        over_white(pairs[..., :3])


@pytest.mark.parametrize("name", CODECS)
def test_transparent_frames_are_composited_onto_white(videos, name: str) -> None:
    suffix, _, decoder, lossless = CODECS[name]
    path = videos[name]
    with VideoReader(path) as reader:
        shown = [frame for frame in reader.frames(EVERY)]
    expected = reference(path, decoder)
    assert [round(f.time, 6) for f in shown] == [round(t, 6) for t, _ in ffprobe_frames(path)]
    assert len(shown) == len(expected) == FRAMES
    for frame in shown:
        assert np.all(hidden_region(frame.rgb) >= 250), (name, frame.index)
        if lossless:  # the source's own pixels, composited
            assert np.array_equal(frame.rgb, over_white(rgba_frame(frame.index)))
        else:  # (the ffmpeg binary is FFmpeg 9, PyAV's 8: conversions round alike, nearly)
            difference = np.abs(frame.rgb.astype(int) - expected[frame.index].astype(int))
            assert difference.mean() < 1.0 and difference.max() <= 8, (name, frame.index)
    # The model's frames are the shown pictures, resized by the one resize.
    samples = [e.frame for e in decode_events(0, str(path), EVERY, MODEL) if isinstance(e, Decoded)]
    assert len(samples) == FRAMES
    for sample, frame in zip(samples, shown, strict=True):
        assert np.array_equal(sample.rgb, resize_for_model(frame.rgb, MODEL))
    # Before: the colour kept under the transparent pixels (FFmpeg's own decoder, straight RGB).
    import av

    with av.open(str(path)) as container:
        plain = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert abs(int(plain[:16].mean(axis=(0, 1))[1]) - HIDDEN[1]) < 12, name


@pytest.mark.parametrize("name", ["vp9-webm", "vp8-webm"])
def test_webm_with_alpha_samples_the_same_frames_in_every_mode(videos, name: str) -> None:
    """libvpx's decoder in every decode mode: the frames decoding everything gives, at
    ffprobe's times; --keyframes takes ffprobe's keyframes."""
    path = videos[name]
    probed = ffprobe_frames(path)
    for sampling in (
        SamplingSettings(every_n=1),
        SamplingSettings(fps=3.0),
        SamplingSettings(every_n=4, max_frames=2),
        SamplingSettings(keyframes=True),
    ):
        times = {}
        for mode in ("exact", "all"):
            with VideoReader(path) as reader:
                frames = list(reader.frames(replace(sampling, mode=mode)))
            assert all(np.all(hidden_region(f.rgb) >= 250) for f in frames), (sampling, mode)
            times[mode] = [(f.index, round(f.time, 6)) for f in frames]
        assert times["exact"] == times["all"], sampling
        if sampling.keyframes:
            keys = [round(t, 6) for t, key in probed if key]
            assert [t for _, t in times["all"]] == keys and len(keys) >= 2


def test_a_changing_hidden_colour_is_no_cut(tmp_path: Path) -> None:
    """Only what is shown cuts a shot: the colour under the transparent pixels changes every
    2 s (as an encoder may leave it), the picture does not — one scene; the same pixels
    without their alpha are three (PySceneDetect's shortest scene: 15 frames)."""
    colours = [(0, 0, 0), (250, 250, 250), (0, 160, 0)]
    frames = []
    for i in range(60):
        rgba = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
        rgba[..., :3] = colours[i // 20]
        rgba[30:60, 40:80] = (30, 30, 220, 255)  # what is shown: a still blue box
        frames.append(rgba)
    alpha = encode(tmp_path / "alpha.mov", frames, ["-c:v", "qtrle"])
    opaque = encode(tmp_path / "opaque.mov", frames, ["-c:v", "qtrle", "-pix_fmt", "rgb24"])
    sampling = SamplingSettings(scenes=True, scene_frames=1)

    def scenes(path: Path) -> list:
        events = decode_events(0, str(path), sampling, MODEL)
        return [e.scene for e in events if isinstance(e, SceneFound)]

    assert len(scenes(alpha)) == 1
    assert len(scenes(opaque)) == 3


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_a_transparent_png_sent_to_a_server_is_composited_alike(mode: str) -> None:
    """Other clients may post PNGs with transparency: the server's model sees what BLIP-2's
    processor makes of them (a palette's transparent index included)."""
    picture = Image.fromarray(rgba_frame(3), "RGBA")
    if mode == "LA":
        picture = picture.convert("LA")
    elif mode == "P":
        picture = picture.convert("RGB").quantize(8)
        picture.info["transparency"] = picture.getpixel((0, 0))  # the hidden green
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", **({"transparency": picture.info["transparency"]}
                                           if mode == "P" else {}))  # fmt: skip
    data = buffer.getvalue()
    received = load_rgb(open_image(data, WireLimits()))
    assert np.array_equal(received, convert_to_rgb(Image.open(io.BytesIO(data)), return_numpy=True))
    assert np.all(hidden_region(received) == 255)


@pytest.mark.parametrize("name", ["vp9-webm", "prores4444-mov", "qtrle-mov"])
@pytest.mark.parametrize("precise", [False, True])
def test_clips_of_a_transparent_video_are_on_white(
    videos, tmp_path: Path, name: str, precise: bool
) -> None:
    """MP4 keeps no alpha: a clip is re-encoded onto white (a stream copy would show the
    hidden colour, or lose the alpha to FFmpeg's own VP9 decoder), the picture vidcap
    captioned; the manifest says why it was re-encoded."""
    path = videos[name]
    [clip] = export_clips(path, [Segment(0.5, 1.0, 5)], tmp_path, precise=precise)
    assert clip.mode == ("precise" if precise else "re-encoded")
    assert clip.note is not None and "transparent" in clip.note
    with VideoReader(path) as reader:
        shown = {f.index: f.rgb for f in reader.frames(EVERY)}
    with VideoReader(tmp_path / clip.path) as reader:
        cut = list(reader.frames(EVERY))
    assert len(cut) == 5
    for offset, frame in enumerate(cut):
        assert np.all(hidden_region(frame.rgb) >= 245), (name, offset)
        source = shown[5 + offset]  # (H.264 at CRF 18, 4:2:0: a few levels)
        assert np.abs(frame.rgb.astype(int) - source.astype(int)).mean() < 4, (name, offset)


def test_a_gif_with_a_transparent_colour_is_on_white(tmp_path: Path) -> None:
    """An animated GIF (a folder of them is a video dataset: TGIF) whose palette has a
    transparent index: its frames at ffprobe's times, on white, as the ffmpeg binary's RGBA
    decode composited by transformers. (FFmpeg's GIF decoder already gives a transparent
    pixel white colour, its ``trans_color``: the same picture with or without compositing.)"""
    frames = [rgba_frame(i) for i in range(FRAMES)]
    graph = "split[a][b];[a]palettegen=reserve_transparent=1[p];[b][p]paletteuse=alpha_threshold=64"
    path = encode(tmp_path / "clip.gif", frames, ["-vf", graph])
    with VideoReader(path) as reader:
        shown = list(reader.frames(EVERY))
    assert [round(f.time, 6) for f in shown] == [round(t, 6) for t, _ in ffprobe_frames(path)]
    expected = reference(path, [])
    assert len(shown) == len(expected) == FRAMES
    for frame in shown:
        assert np.all(hidden_region(frame.rgb) == 255), frame.index
        assert np.abs(frame.rgb.astype(int) - expected[frame.index].astype(int)).max() <= 2
