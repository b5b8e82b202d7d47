"""vidcap.clips, vidcap.ffmpeg and ``vidcap clips``: real cuts of a video with a known GOP."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.videos import encode_with_ffmpeg, frame_number
from vidcap import ffmpeg
from vidcap.cli.mask import add_clips_parser
from vidcap.clips import clip_name, export_clips, load_segments
from vidcap.errors import UsageError, VidcapError, VideoError
from vidcap.mask import Segment
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader

FPS = 25
GOP = 25  # frames between keyframes: one second
SECONDS = 8
SIZE = (120, 160)  # (height, width)
SAMPLE_RATE = 16000
FRAME = 1 / FPS
EVERY = SamplingSettings(every_n=1)


def grey(index: int) -> int:
    """Frame ``index`` is a flat grey whose level encodes the index (survives re-encoding)."""
    return (index * 37) % 200 + 30


def write_gop_video(path: Path) -> Path:
    """8 s of 25 fps H.264 with a keyframe exactly every second, plus a mono AAC track."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.height, video.width = SIZE
        video.pix_fmt = "yuv420p"
        video.options = {
            "preset": "ultrafast",
            "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0",
        }
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        for i in range(SECONDS * FPS):
            frame = av.VideoFrame.from_ndarray(np.full((*SIZE, 3), grey(i), np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = (0.2 * np.sin(np.arange(SECONDS * SAMPLE_RATE) * 0.17)).astype(np.float32)
        for offset in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(
                samples[None, offset : offset + 1024], format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = SAMPLE_RATE, offset
            chunk.time_base = Fraction(1, SAMPLE_RATE)
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return path


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gop_video(tmp_path_factory.mktemp("clips") / "gop.mp4")


def decode(path: Path) -> tuple[list[float], list[int], list[str]]:
    """Frame times and grey levels of a clip, and its stream types: it must play through."""
    with av.open(str(path)) as container:
        kinds = [s.type for s in container.streams]
        frames = list(container.decode(video=0))
    levels = [int(round(f.to_ndarray(format="gray").mean())) for f in frames]
    return [float(f.time) for f in frames], levels, kinds


def test_the_test_video_has_the_known_gop(gop_video: Path) -> None:
    with av.open(str(gop_video)) as container:
        stream = container.streams.video[0]
        keys = [
            round(float(p.pts * stream.time_base), 3)
            for p in container.demux(stream)
            if p.is_keyframe and p.pts is not None
        ]
    assert keys == [float(s) for s in range(SECONDS)]
    assert ffmpeg.probe(gop_video).duration == pytest.approx(SECONDS, abs=FRAME)


# --- cutting -----------------------------------------------------------------------------

SEGMENTS = [Segment(1.0, 3.0), Segment(2.52, 4.2), Segment(5.4, 5.8), Segment(6.0, 8.0)]


@pytest.mark.heavy
def test_precise_clips_are_frame_accurate(gop_video: Path, tmp_path: Path) -> None:
    clips = export_clips(gop_video, SEGMENTS, tmp_path / "out", precise=True)
    for clip, segment in zip(clips, SEGMENTS, strict=True):
        wanted = segment.end - segment.start
        assert clip.duration == pytest.approx(wanted, abs=FRAME + 1e-6), clip
        times, levels, kinds = decode(tmp_path / "out" / clip.path)
        assert kinds == ["video", "audio"]
        assert len(times) == pytest.approx(wanted * FPS, abs=1)
        first = round(segment.start * FPS)
        assert abs(levels[0] - grey(first)) <= 3, (clip, levels[:3])  # starts on the asked frame


def test_stream_copy_clips_are_within_a_gop(gop_video: Path, tmp_path: Path) -> None:
    clips = export_clips(gop_video, SEGMENTS, tmp_path / "out")
    for clip, segment in zip(clips, SEGMENTS, strict=True):
        assert clip.duration == pytest.approx(segment.end - segment.start, abs=GOP / FPS), clip
        times, levels, kinds = decode(tmp_path / "out" / clip.path)
        assert kinds == ["video", "audio"]
        assert times and len(times) <= (segment.end - segment.start + GOP / FPS) * FPS + 1
        with av.open(str(tmp_path / "out" / clip.path)) as container:
            first_packet = next(container.demux(video=0))
        assert first_packet.is_keyframe  # cut on a keyframe: plays without a broken start


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("msmpeg4-avi", "re-encoded"),  # MP4 has no tag for MS-MPEG4 v3: copy cannot work
        ("msmpeg4-noindex-avi", "re-encoded"),
        ("mpeg4-avi", "stream-copy"),
        ("mpeg4-bframes-avi", "re-encoded"),  # no pts in AVI: a copy shows them out of order
    ],
)
def test_avi_clips_fall_back_to_reencoding(
    generated_videos, tmp_path: Path, name: str, mode: str, caplog
) -> None:
    """Regression (#12.6): stream copy of an AVI failed with ffmpeg's last line only. And
    where MP4 cannot hold the codec, the note says so in one line, and the source's next
    clips are re-encoded at once: ffmpeg's refusal was a warning and a failed run per clip."""
    path, spec = generated_videos[name]
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="vidcap.clips"):
        clip, second = export_clips(path, [Segment(1.0, 2.0), Segment(2.0, 2.5)], out)
    assert clip.mode == second.mode == mode
    said = [r.getMessage() for r in caplog.records if r.name == "vidcap.clips"]
    assert not [m for m in said if "stream copy failed" in m]
    assert len([m for m in said if "MP4 cannot hold" in m]) == (name.startswith("msmpeg4"))
    times, levels, kinds = decode(out / clip.path)
    assert kinds == ["video"] and times
    assert clip.duration == pytest.approx(1.0, abs=0.5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mode"] == "stream-copy"  # what was asked; each clip says what was done
    entry = manifest["clips"][0]
    assert entry["mode"] == mode
    if name == "mpeg4-bframes-avi":
        assert "out of order" in entry["note"]
    elif mode == "re-encoded":
        assert entry["note"] == "MP4 cannot hold the source's codec (msmpeg4): re-encoded"
        assert manifest["clips"][1]["note"] == entry["note"]
    else:
        assert entry["note"] is None
    names = [clip.path, second.path, "manifest.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)


def shown_indices(path: Path) -> list[int]:
    """The index of each frame a clip of a generated spec shows (its grey level, nearest)."""
    from tests.support.videos import frame_colour

    levels = {int(frame_colour(i)[0]): i for i in range(200)}
    _, shown, _ = decode(path)
    return [levels[min(levels, key=lambda level: abs(level - value))] for value in shown]


@pytest.mark.parametrize("name", ["h264-ts", "late-ts", "h264-gop-ts"])
@pytest.mark.parametrize("precise", [False, True])
@pytest.mark.heavy
def test_clips_of_an_mpeg_ts_hold_the_asked_frames(
    generated_videos, tmp_path: Path, name: str, precise: bool
) -> None:
    """Regression: FFmpeg's MPEG-TS demuxer cannot find a keyframe before an asked time in
    these streams (x264, one keyframe, or one every 8 frames, without random-access flags):
    its seek lands after it, and clips came out without video ("no video stream") or
    starting frames late. Such a clip is cut again by decoding from the file's start."""
    path, spec = generated_videos[name]
    segments = [Segment(0.4, 0.6), Segment(1.4, 1.8), Segment(2.0, 2.2)]  # 10 fps
    out = tmp_path / "out"
    clips = export_clips(path, segments, out, precise=precise)
    for clip, segment in zip(clips, segments, strict=True):
        first, last = round(segment.start * 10), round(segment.end * 10)
        shown = shown_indices(out / clip.path)
        assert shown[: last - first] == list(range(first, last)), (clip, shown)
        if precise:
            assert shown == list(range(first, last)) and clip.mode == "precise"
        if clip.note is not None:  # cut again: says why, frame-accurate
            assert "seek in the source landed after" in clip.note
            assert clip.mode == ("precise" if precise else "re-encoded")
            assert shown == list(range(first, last))
    assert precise or any(c.mode == "re-encoded" for c in clips)  # the case is exercised
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [c.path for c in clips] + ["manifest.json"]
    )


@pytest.mark.parametrize("precise", [False, True])
@pytest.mark.heavy
def test_a_clip_cut_again_decodes_from_shortly_before_it_not_from_the_files_start(
    tmp_path: Path, precise: bool
) -> None:
    """Regression: a clip whose seek landed after the frame it needed (an MPEG-TS whose
    demuxer finds no keyframe before the cut; a remuxed recording's .ts at 200 s) was cut
    again by decoding from the file's start: minutes a clip, late in a two-hour recording.
    It is cut again from where the demuxer lands 20 s before it (``LEAD_S``), and from the
    file's start only if that is not whole either."""
    from tests.support.videos import VideoSpec, constant_rate, frame_colour, write_video
    from vidcap.clips import LEAD_S

    spec = VideoSpec("long-ts", "libx264", ".ts", constant_rate(300, Fraction(10)), gop=8,
                     b_frames=3)  # fmt: skip
    source = write_video(tmp_path / "long.ts", spec)
    segments = [Segment(25.0, 25.6), Segment(21.0, 21.5), Segment(27.3, 28.0)]
    out = tmp_path / "out"
    clips = export_clips(source, segments, out, precise=precise)
    again = f"cut again from {LEAD_S:g} s before it"
    for clip, segment in zip(clips, segments, strict=True):
        _, levels, _ = decode(out / clip.path)
        frames = range(round(segment.start * 10), round(segment.end * 10))
        wanted = [int(frame_colour(i)[0]) for i in frames]  # (grey levels: 300 frames)
        assert len(levels) == len(wanted), clip
        assert all(abs(got - want) <= 3 for got, want in zip(levels, wanted, strict=True)), (
            clip,
            levels,
        )
        assert clip.note is None or clip.note.endswith(again), clip
    assert any(clip.note for clip in clips)  # the case is exercised


@pytest.mark.parametrize("ahead", [False, True], ids=["back", "97s-ahead"])
@pytest.mark.parametrize("precise", [False, True])
@pytest.mark.heavy
def test_clips_of_an_mpeg_ts_whose_clock_starts_again(
    tmp_path: Path, precise: bool, ahead: bool
) -> None:
    """Regression: two MPEG-TS recordings joined byte for byte (``cat a.ts b.ts``; a reset in
    a broadcast recording) repeat their timestamps. vidcap's timeline goes on past the
    reset (frames 100… of the second at 3.0 s), but clips were cut by ffmpeg's seek in the
    file's timestamps — from the first part again — and the container's duration (3 s)
    refused every segment after it. Now each clip holds the frames vidcap timed there. The
    same where the second clock is 97 s ahead (a splice: the timeline goes on there too)."""
    parts = [
        encode_with_ffmpeg(tmp_path / f"{name}.ts", count, "10", ["-g", "10", *extra], first=first)
        for name, first, count, extra in (
            ("a", 0, 30, []),
            ("b", 100, 20, ["-output_ts_offset", "100"] if ahead else []),
        )
    ]
    joined = tmp_path / "joined.ts"
    joined.write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    with VideoReader(joined) as reader:
        timeline = {round(f.time, 3): frame_number(f.rgb) for f in reader.frames(EVERY)}
    assert timeline[2.9] == 29 and timeline[3.0] == 100 and max(timeline) == 4.9
    segments = [Segment(0.5, 1.0), Segment(2.7, 3.3), Segment(3.5, 4.0), Segment(4.5, 9.0)]
    out = tmp_path / "out"
    clips = export_clips(joined, segments, out, precise=precise)
    for clip, segment in zip(clips, segments, strict=True):
        with VideoReader(out / clip.path) as reader:
            got = [frame_number(f.rgb) for f in reader.frames(EVERY)]
        end = min(segment.end, 5.0)
        asked = [n for t, n in sorted(timeline.items()) if segment.start <= t < end - 1e-6]
        assert got == asked, (clip, got, asked)
        assert clip.end == end and "clock starts again" in (clip.note or "")
        assert clip.mode == ("precise" if precise else "re-encoded")


@pytest.mark.parametrize(
    ("suffix", "args"),
    [
        (".avi", ["-c:v", "mpeg4", "-bf", "2"]),  # DivX/XviD: B-frames, no pts in AVI
        (".avi", ["-c:v", "libxvid", "-bf", "2", "-vtag", "XVID"]),  # packed B-frames
        (
            ".avi",
            [
                "-c:v",
                "libx264",
                "-bf",
                "2",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-x264-params",
                "bframes=2:b-adapt=0",
            ],
        ),  # fmt: skip
        (".mpg", ["-c:v", "mpeg2video", "-bf", "2", "-f", "vob"]),  # DVD: pts on some packets
    ],
    ids=["mpeg4-avi", "xvid-packed-avi", "h264-avi", "mpeg2-vob"],
)
@pytest.mark.heavy
def test_a_stream_copy_of_frames_without_presentation_times_is_re_encoded(
    tmp_path: Path, suffix: str, args: list[str]
) -> None:
    """Regression: a stream copy into MP4 of a source that stores no presentation time for
    frames its codec reorders (B-frames in AVI, MPEG-PS) took each frame's decode time for
    its presentation time: the clip showed its frames out of order (frames 10 11 13 12 …),
    said to be a clean stream copy. Such a source's clips are re-encoded, saying why."""
    source = encode_with_ffmpeg(tmp_path / f"source{suffix}", 40, "10", args)
    with VideoReader(source) as reader:
        timeline = [(round(f.time, 3), frame_number(f.rgb)) for f in reader.frames(EVERY)]
    numbers = [n for _, n in timeline]  # (FFmpeg loses packed B-frames at the very end)
    assert numbers == sorted(set(numbers)) and len(numbers) >= 38  # the source plays in order
    segments = [Segment(1.0, 2.0), Segment(2.5, 3.2)]
    out = tmp_path / "out"
    clips = export_clips(source, segments, out)
    for clip, segment in zip(clips, segments, strict=True):
        with VideoReader(out / clip.path) as reader:
            got = [frame_number(f.rgb) for f in reader.frames(EVERY)]
        asked = [n for t, n in timeline if segment.start <= t < segment.end - 1e-6]
        assert got == asked, (clip, got)
        assert clip.mode == "re-encoded" and "out of order" in (clip.note or "")


@pytest.mark.parametrize(
    ("suffix", "args"),
    [
        (".h264", ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "12"]),
        (".m2v", ["-c:v", "mpeg2video", "-bf", "2", "-g", "12"]),
    ],
)
def test_clips_of_an_elementary_stream_hold_the_asked_frames(
    tmp_path: Path, suffix: str, args: list[str]
) -> None:
    """Regression: a raw stream (no container: ``.h264``, ``.m2v``) is captioned, but its
    clips were refused ("the container does not say how long it is"). Its length is read
    from its packets, and, as no index lets ffmpeg seek in it, it is cut by decoding from
    its start, re-encoded, saying why."""
    source = encode_with_ffmpeg(tmp_path / f"source{suffix}", 40, "10", args)
    assert ffmpeg.probe(source).headerless
    with VideoReader(source) as reader:
        timeline = [(round(f.time, 3), frame_number(f.rgb)) for f in reader.frames(EVERY)]
        duration = reader.stats.duration  # vidcap's: the last frame's end
    assert [n for _, n in timeline] == list(range(40))
    assert ffmpeg.probe(source).duration == pytest.approx(duration, abs=1e-6)
    segments = [Segment(0.0, 1.0), Segment(2.05, 3.2), Segment(3.5, 9.0)]  # the last past the end
    out = tmp_path / "out"
    clips = export_clips(source, segments, out)
    for clip, segment in zip(clips, segments, strict=True):
        with VideoReader(out / clip.path) as reader:
            got = [frame_number(f.rgb) for f in reader.frames(EVERY)]
        asked = [n for t, n in timeline if segment.start <= t + 1e-6 and t < segment.end - 1e-6]
        assert got == asked, (clip, got)
        assert clip.mode == "re-encoded" and "elementary stream" in (clip.note or "")
        assert clip.end == pytest.approx(min(segment.end, duration), abs=1e-6)


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
@pytest.mark.parametrize("precise", [False, True])
@pytest.mark.heavy
def test_a_frame_held_across_a_cut_opens_the_clip_and_lasts_to_its_end(
    tmp_path: Path, precise: bool, suffix: str
) -> None:
    """Regression: a slideshow or screen recording writes a frame only when the picture
    changes. ffmpeg's frame-accurate seek drops a frame that began before the cut, and a
    clip ends a frame after its last one begins: a 3 s clip inside a 6 s slide came out one
    frame long (0.04 s, after a warning), and one with no frame beginning inside it failed
    "no frame decodes between …", stopping `vidcap clips --scenes --max-duration`. Such
    clips are re-encoded at a constant rate, each frame repeated while it is shown. (An MP4
    states its average rate, one frame in 6 s here: a hold judged by it was never found.)"""
    from tests.support.videos import VideoSpec, frame_colour, write_video

    spec = VideoSpec("slides", "libx264", suffix, (0.0, 6.0, 12.0, 18.0, 24.0), rate=Fraction(25))
    source = write_video(tmp_path / f"slides{suffix}", spec)
    segments = [Segment(1.0, 4.0), Segment(5.0, 8.0), Segment(16.5, 19.5)]
    out = tmp_path / "out"
    clips = export_clips(source, segments, out, precise=precise)

    def slides_shown(path: Path) -> tuple[list[float], list[int]]:  # (of the 5, nearest)
        times, levels, _ = decode(path)
        grey = [int(frame_colour(i)[0]) for i in range(5)]
        return times, [min(range(5), key=lambda i: abs(grey[i] - level)) for level in levels]

    for clip, segment, slides in zip(clips, segments, [[0], [0, 1], [2, 3]], strict=True):
        times, shown = slides_shown(out / clip.path)
        assert times[0] == pytest.approx(0.0, abs=0.001), clip
        assert clip.duration == pytest.approx(segment.end - segment.start, abs=0.05), clip
        assert sorted(set(shown)) == slides and shown == sorted(shown), (clip, shown)
        assert clip.mode == ("precise" if precise else "re-encoded")
        assert "repeated for as long as it is shown" in (clip.note or "")
    times, shown = slides_shown(out / clips[2].path)
    assert times[shown.index(3)] == pytest.approx(1.5, abs=0.05)  # the last slide: from 18 s


def test_a_variable_rate_clip_ending_in_a_slow_stretch_is_cut_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a phone video's rate drops in low light (30 frames/s, then 10). A
    re-encoded clip's muxer gives its last frame a duration of its own guess (a nominal
    frame, and B-frames' delay), so a clip ending in the slow stretch came out 0.067-0.1 s
    short, was taken for one whose seek landed late, and was cut again from the file's start
    (slow on a long video) with a warning and a note."""
    from tests.support.videos import VideoSpec, write_video

    times = tuple([i / 30 for i in range(40)] + [40 / 30 + i / 10 for i in range(40)])
    spec = VideoSpec("phone", "libx264", ".mp4", times, rate=Fraction(30), b_frames=2)
    source = write_video(tmp_path / "phone.mp4", spec)
    source_times, source_levels, _ = decode(source)
    segments = [Segment(1.0, 2.0), Segment(2.4, 3.0)]
    with caplog.at_level(logging.WARNING, logger="vidcap"):
        clips = export_clips(source, segments, tmp_path / "out", precise=True)
    assert caplog.records == []
    for clip, segment in zip(clips, segments, strict=True):
        assert clip.note is None and clip.mode == "precise", clip
        times, levels, _ = decode(tmp_path / "out" / clip.path)
        inside = [i for i, t in enumerate(source_times) if segment.start <= t < segment.end]
        assert levels == [source_levels[i] for i in inside]  # each frame of it, once
        assert times[-1] == pytest.approx(source_times[inside[-1]] - segment.start, abs=0.002)


@pytest.mark.parametrize("precise", [False, True])
def test_a_clips_duration_reaches_the_end_of_its_last_frame(tmp_path: Path, precise) -> None:
    """Regression: the manifest's duration was PyAV's libavformat's (62) for the clip's
    video track, its decode-time steps summed: short of its last frame's end by the
    B-frames' delay and, after a variable rate's slow stretch, by that stretch's interval
    (a precise clip of a phone-like video said 0.95 s with a frame at 1.2 s; ffprobe 5
    says 1.25). It is now where the clip's packets end: the last frame's pts plus its
    duration (here at least the 0.05 s between the fast frames, at most the slow 0.2)."""
    from tests.support.videos import VideoSpec, write_video

    times = tuple([i * 0.05 for i in range(20)] + [1.0 + i * 0.2 for i in range(15)])
    spec = VideoSpec("vfr", "libx264", ".mp4", times, rate=Fraction(20), gop=10)
    source = write_video(tmp_path / "vfr.mp4", spec)
    segments = [Segment(0.0, 1.0), Segment(0.6, 1.9), Segment(0.5, 2.5)]
    out = tmp_path / "out"
    clips = export_clips(source, segments, out, precise=precise)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["duration"] for c in manifest["clips"]] == [c.duration for c in clips]
    for clip in clips:
        last = max(decode(out / clip.path)[0])
        assert last + 0.05 - 0.001 <= clip.duration <= last + 0.2 + 0.001, (clip, last)


@pytest.mark.parametrize("precise", [False, True])
@pytest.mark.heavy
def test_a_picture_held_while_the_sound_goes_on_fills_its_clips(
    tmp_path: Path, precise: bool
) -> None:
    """Regression: a clip of a song over one still picture (one frame, then 6 s of sound)
    was re-encoded to hold the frame, but FFmpeg's ``fps`` filter holds a frame only as
    long as the stream says it lasts: the clip's picture was one frame of 0.04 s, then
    nothing for the rest of its sound. The last frame is now held to the clip's end."""
    source = encode_with_ffmpeg(tmp_path / "still.mp4", 1, "25", [
        "-f", "lavfi", "-i", "sine=duration=6", "-c:v", "libx264", "-c:a", "aac"])  # fmt: skip
    segments = [Segment(0.0, 4.0), Segment(3.0, 6.0)]
    out = tmp_path / "out"
    clips = export_clips(source, segments, out, precise=precise)
    for clip, segment in zip(clips, segments, strict=True):
        times, _, _ = decode(out / clip.path)
        length = segment.end - segment.start
        assert times[0] == pytest.approx(0.0, abs=0.001), clip
        assert times[-1] == pytest.approx(length, abs=0.1), (clip, times[-3:])
        assert clip.duration == pytest.approx(length, abs=0.05), clip


def test_pieces_of_a_scene_after_the_files_end_are_passed_over(gop_video: Path, tmp_path) -> None:
    """Regression: a scene's end comes from its last frame's duration as FFmpeg gives it,
    which can lie past the file's stated end (an MP4 slideshow of FFmpeg 5: 40 s against
    30.04 s); with ``--max-duration`` a piece starting after the end stopped ``vidcap clips``
    ("at or after the end … is it the video of these scenes?"). Such pieces hold nothing:
    they are passed over; a scene that starts after the end is still refused."""
    from vidcap.clips import export_scene_clips

    row = {"scene": 1, "start": 5.0, "end": 12.0, "start_frame": 125, "end_frame": 300,
           "caption": "grey", "captions": [{"frame": 130, "time": 5.2, "caption": "grey"}]}  # fmt: skip
    clips = export_scene_clips(gop_video, [row], tmp_path / "out", max_duration=2.0)
    assert [(c.start, c.end) for c in clips] == [(5.0, 7.0), (7.0, 8.0)]
    late = {**row, "start": 9.0}
    with pytest.raises(UsageError, match="scene 1 starts at 9.0 s, at or after the end"):
        export_scene_clips(gop_video, [late], tmp_path / "late", max_duration=2.0)


def test_ffmpeg_errors_keep_the_cause_not_only_the_last_line(generated_videos, tmp_path) -> None:
    path, _ = generated_videos["msmpeg4-avi"]
    with pytest.raises(ffmpeg.FfmpegError) as info:
        ffmpeg.run_ffmpeg(["-i", str(path), "-c", "copy", "-f", "mp4", str(tmp_path / "x.mp4")])
    message = str(info.value)
    assert "Could not find tag for codec msmpeg4v3" in message  # the cause, first line
    assert "Could not write header" in message  # the last line
    assert "\n" not in message and " @ 0x" not in message


def ffmpeg_programs() -> list[str]:
    """The ``ffmpeg`` programs vidcap may run: the system's (FFmpeg 5.1 here: devices not
    flagged in ``-demuxers``) and the imageio-ffmpeg wheel's static build (9.0)."""
    import imageio_ffmpeg

    system = shutil.which("ffmpeg")
    return [*([system] if system else []), imageio_ffmpeg.get_ffmpeg_exe()]


@pytest.mark.parametrize("program", ffmpeg_programs(), ids=lambda p: Path(p).name)
def test_the_ffmpeg_program_opens_no_file_a_video_names(
    gop_video: Path, tmp_path: Path, program: str
) -> None:
    # A file that became an ffconcat script after vidcap probed it (a shared folder), or
    # that PyAV's FFmpeg reads otherwise: the program must cut it as itself, not the file
    # it names.
    shutil.copy(gop_video, tmp_path / "named.mp4")
    script = tmp_path / "video.mp4"
    script.write_text("ffconcat version 1.0\nfile named.mp4\n")
    out = tmp_path / "clip.mp4"
    arguments = ["-ss", "1", "-i", str(script), "-t", "1", "-c", "copy", "-f", "mp4", str(out)]
    with pytest.raises(VideoError) as info:
        ffmpeg.run_ffmpeg(arguments, ffmpeg=program)
    assert str(info.value) == f"{script}: not a decodable video ({ffmpeg.FOLLOWS})"
    assert not out.exists()
    ffmpeg.run_ffmpeg([*arguments[:3], str(tmp_path / "named.mp4"), *arguments[4:]], program)
    assert out.stat().st_size > 0  # the same command cuts a video
    allowed = set(ffmpeg.program_demuxers(program).split(","))
    assert {"mov", "matroska", "avi", "mpegts", "asf", "h264"} <= allowed
    # what both programs have and PyAV's FFmpeg lacks: manifests, scripts, devices
    assert not allowed & {"concat", "hls", "dash", "imf", "avisynth", "lavfi", "x11grab"}


def _numbers(path: Path) -> list[int]:
    """The number (``numbered_frame``) of each frame ``path`` shows, in order."""
    with av.open(str(path)) as container:
        return [frame_number(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


@pytest.mark.parametrize("program", ffmpeg_programs(), ids=lambda p: Path(p).name)
@pytest.mark.parametrize("precise", [False, True])
def test_clips_of_a_fragmented_mp4_cut_inside_a_moof_are_cut_from_its_whole_fragments(
    tmp_path: Path, monkeypatch, program: str, precise: bool
) -> None:
    """Regression: a fragmented MP4 cut off inside a fragment's 'moof' (OBS Studio's
    recording after a crash) is captioned up to its whole fragments, but its clips were cut
    by the ffmpeg program, which (FFmpeg 8 and 9: the wheel's) cannot open it: "could not cut
    …: trun sample count 0 exceeds the -1 samples the input can hold". ffmpeg now reads its
    whole fragments only (the ``subfile`` protocol): the clip holds the frames the same cut
    of the file cut there (``head -c N``) holds, whichever ffmpeg runs."""
    which = shutil.which
    monkeypatch.setattr(
        ffmpeg.shutil, "which", lambda name: program if name == "ffmpeg" else which(name)
    )
    args = [
        "-f", "lavfi", "-i", "sine=duration=4", "-c:v", "libx264", "-g", "30", "-c:a", "aac",
        "-shortest", "-movflags", "frag_keyframe+empty_moov",
    ]  # fmt: skip
    data = encode_with_ffmpeg(tmp_path / "recording.mp4", 120, "30", args).read_bytes()
    moofs = [at for at in range(len(data) - 4) if data[at : at + 4] == b"moof"]
    assert len(moofs) >= 3
    cut = tmp_path / "crashed,, odd:name.mp4"  # (nothing in its path is read as a protocol)
    cut.write_bytes(data[: moofs[2] - 4 + 100])
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(data[: moofs[2] - 4])
    clips = {
        name: export_clips(path, [Segment(0.5, 1.5)], tmp_path / name, precise=precise)
        for name, path in (("cut", cut), ("whole", whole))
    }
    shown = {name: _numbers(tmp_path / name / c[0].path) for name, c in clips.items()}
    assert shown["cut"] == shown["whole"], shown
    assert len(shown["cut"]) >= 30  # (1 s at 30 fps)
    assert clips["cut"][0].mode == clips["whole"][0].mode


def test_names_manifest_and_no_partial_files(gop_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    clips = export_clips(gop_video, SEGMENTS[:2], out)
    names = ["gop_0001_1.000-3.000.mp4", "gop_0002_2.520-4.200.mp4"]
    assert [c.path for c in clips] == names
    assert sorted(p.name for p in out.iterdir()) == [*names, "manifest.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == str(gop_video)
    assert manifest["mode"] == "stream-copy"
    assert [(c["path"], c["start"], c["end"]) for c in manifest["clips"]] == [
        (names[0], 1.0, 3.0),
        (names[1], 2.52, 4.2),
    ]
    assert [c["duration"] for c in manifest["clips"]] == [c.duration for c in clips]
    again = export_clips(gop_video, SEGMENTS[:2], out)  # a rerun overwrites the same names
    assert [c.path for c in again] == names
    assert sorted(p.name for p in out.iterdir()) == [*names, "manifest.json"]


def test_a_segment_past_the_end_is_cut_at_the_end(gop_video: Path, tmp_path: Path) -> None:
    [clip] = export_clips(gop_video, [Segment(7.0, 9.5)], tmp_path, precise=True)
    assert (clip.start, clip.end) == (7.0, pytest.approx(SECONDS, abs=FRAME))
    assert clip.duration == pytest.approx(1.0, abs=FRAME + 1e-6)
    # named for what it holds, as its manifest entry says (it was named 7.000-9.500)
    assert clip.path == clip_name("gop", 1, Segment(7.0, SECONDS)) == "gop_0001_7.000-8.000.mp4"


def test_segments_of_a_late_start_are_cut_where_its_frames_are(
    generated_videos, tmp_path: Path
) -> None:
    """Regression: on a video whose first frame is at 1.075 s (times keep a late start), a
    segment wholly before it ended ``vidcap clips`` with a traceback (``max() arg is an
    empty sequence``); one that begins before it was named and listed from 0 s."""
    path, _ = generated_videos["late-mp4"]
    with pytest.raises(UsageError, match=r"segment 2 ends at 1\.0 s, before .* starts \(1\.075 s"):
        export_clips(path, [Segment(1.5, 2.0), Segment(0.0, 1.0)], tmp_path / "before")
    assert not (tmp_path / "before").exists()  # checked before anything is cut
    [clip] = export_clips(path, [Segment(0.0, 2.0)], tmp_path / "out", precise=True)
    assert (clip.start, clip.end, clip.path) == (1.075, 2.0, "late-mp4_0001_1.075-2.000.mp4")
    assert clip.duration == pytest.approx(0.925, abs=0.1 + 1e-6)


def test_no_segments_writes_an_empty_manifest(gop_video: Path, tmp_path: Path) -> None:
    assert export_clips(gop_video, [], tmp_path / "none") == []
    assert json.loads((tmp_path / "none" / "manifest.json").read_text())["clips"] == []


def test_a_segment_after_the_end_is_a_usage_error(gop_video: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"segment 2 starts at 8\.5 s, at or after the end"):
        export_clips(gop_video, [Segment(1, 2), Segment(8.5, 9.0)], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is cut


def test_bad_videos(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match=r"missing\.mp4: no such file"):
        export_clips(tmp_path / "missing.mp4", [Segment(0, 1)], tmp_path / "out")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(VideoError, match=r"notes\.mp4: not a readable video"):
        export_clips(text, [Segment(0, 1)], tmp_path / "out")


# --- segments files ----------------------------------------------------------------------


def write(tmp_path: Path, data: object | str) -> Path:
    path = tmp_path / "segments.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_load_segments_from_a_report_or_a_list(tmp_path: Path) -> None:
    report = {"video": "v.mp4", "segments": [{"start": 1, "end": 2.5, "frames": 3}]}
    assert load_segments(write(tmp_path, report)) == [Segment(1.0, 2.5, 3)]
    assert load_segments(write(tmp_path, [{"start": 0, "end": 1}])) == [Segment(0.0, 1.0)]
    assert load_segments(write(tmp_path, {"segments": []})) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", r"not a segments JSON file \(Expecting property name .* at line 1\)"),
        ("", "not a segments JSON file"),
        ({"clips": []}, "expected a list of segments or a 'vidcap mask' report"),
        ("3", "expected a list of segments"),
        ([[1, 2]], r"segment 1: expected an object with 'start' and 'end', got \[1, 2\]"),
        ([{"start": 0, "end": 1}, {"start": -1, "end": 2}], "segment 2: start -1 is negative"),
        ([{"start": 3, "end": 3}], "segment 1: end 3 is not after start 3"),
        ([{"start": 4, "end": 2}], "segment 1: end 2 is not after start 4"),
        # (its clip's name held all 301 digits: "File name too long")
        ([{"start": 0, "end": 1e300}], r"segment 1: end 1e\+300 s is past any video \(1e\+09 s\)"),
        ([{"start": "1", "end": 2}], "segment 1: 'start' must be a number of seconds, got '1'"),
        ([{"start": 1}], "segment 1: 'end' must be a number of seconds, got None"),
        ([{"start": True, "end": 2}], "'start' must be a number"),
        ('[{"start": NaN, "end": 2}]', "'start' must be a number of seconds, got nan"),
    ],
)
def test_bad_segments_files(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_segments(write(tmp_path, data))


def test_missing_segments_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope\.json: no such file"):
        load_segments(tmp_path / "nope.json")


# --- ffmpeg ------------------------------------------------------------------------------


def test_find_ffmpeg_prefers_path_then_the_wheel(monkeypatch) -> None:
    monkeypatch.setattr(ffmpeg.shutil, "which", lambda name: None)
    import imageio_ffmpeg

    assert ffmpeg.find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()
    monkeypatch.setattr(ffmpeg.shutil, "which", lambda name: "/usr/bin/ffmpeg")
    assert ffmpeg.find_ffmpeg() == "/usr/bin/ffmpeg"


def test_no_ffmpeg_anywhere_is_one_clear_line(monkeypatch) -> None:
    import imageio_ffmpeg

    def missing() -> str:
        raise RuntimeError("No ffmpeg exe could be found.")

    monkeypatch.setattr(ffmpeg.shutil, "which", lambda name: None)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    with pytest.raises(VidcapError, match="^ffmpeg not found: install ffmpeg on PATH or"):
        ffmpeg.find_ffmpeg()
    with pytest.raises(VidcapError, match="ffmpeg '/no/such/ffmpeg' not found"):
        ffmpeg.find_ffmpeg("/no/such/ffmpeg")


def test_ffmpeg_failure_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ffmpeg.FfmpegError, match=r"^ffmpeg failed \(exit \d+\): .+") as info:
        ffmpeg.run_ffmpeg(["-i", str(tmp_path / "absent.mp4"), "-f", "null", "-"])
    assert "\n" not in str(info.value)


def test_probe_without_pyav_reads_ffmpeg(gop_video: Path) -> None:
    exact = ffmpeg.probe_with_pyav(gop_video)
    parsed = ffmpeg.probe_with_ffmpeg(gop_video)
    assert parsed.duration == pytest.approx(exact.duration, abs=0.011)
    assert (parsed.width, parsed.height, parsed.fps, parsed.codec) == (160, 120, 25.0, "h264")
    assert (exact.width, exact.height, exact.fps, exact.codec) == (160, 120, 25.0, "h264")
    assert exact.frames == SECONDS * FPS
    with pytest.raises(VideoError, match="not a readable video"):
        ffmpeg.parse_ffmpeg_info(Path("x.txt"), "Input #0, lrc\n  Stream #0:0: Subtitle: text\n")


# --- the CLI -----------------------------------------------------------------------------


def run_clips(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vidcap")
    add_clips_parser(parser.add_subparsers())
    args = parser.parse_args(["clips", *argv])
    return args.func(args)


def test_cli_clips(gop_video: Path, tmp_path: Path, capsys) -> None:
    report = write(tmp_path, {"segments": [{"start": 2.0, "end": 3.0, "frames": 1}]})
    assert run_clips([str(gop_video), str(report), "--out", str(tmp_path / "c"), "--precise"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [
        str(tmp_path / "c" / "gop_0001_2.000-3.000.mp4"),
        str(tmp_path / "c" / "manifest.json"),
    ]
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["mode"] == "precise"


def test_cli_clips_bad_segments(gop_video: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a segments JSON file"):
        run_clips([str(gop_video), str(write(tmp_path, "oops")), "--out", str(tmp_path / "c")])


def test_cli_clips_of_a_folder_of_segments_or_a_caption_jsonl_as_scenes_says_what_it_is(
    gop_video: Path, tmp_path: Path
) -> None:
    """Regressions: a folder given as the segments file was "no such file"; a caption JSONL
    given to ``--scenes`` was "line 1: 'scene' must be a number, got None"."""
    with pytest.raises(UsageError, match="is a folder: give a segments JSON file"):
        run_clips([str(gop_video), str(tmp_path), "--out", str(tmp_path / "c")])
    captions = tmp_path / "gop.jsonl"
    captions.write_text(json.dumps({"video": str(gop_video), "time": 0.0, "caption": "a"}) + "\n")
    with pytest.raises(UsageError, match="a caption JSONL, not a scenes file: give the <name>"):
        run_clips(["--scenes", str(captions), "--out", str(tmp_path / "c")])


def test_cli_clips_by_a_report_of_another_video(gop_video: Path, tmp_path: Path, caplog) -> None:
    """Regression: ``vidcap clips VIDEO REPORT`` read only the report's segments, so the
    report of another video (a slip in a batch loop) cut this one at its times, silently.
    A report of a video that is here is a usage error; of one that is not, by another
    name, a warning."""
    other = Path(shutil.copy2(gop_video, tmp_path / "other.mp4"))
    segments = [{"start": 2.0, "end": 3.0, "frames": 1}]
    report = write(tmp_path, {"video": str(other), "segments": segments})
    with pytest.raises(UsageError, match=f"is a report of {other}, not of {gop_video}"):
        run_clips([str(gop_video), str(report), "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()
    assert run_clips([str(other), str(report), "--out", str(tmp_path / "c")]) == 0  # its own
    elsewhere = write(tmp_path, {"video": "/elsewhere/talk.mp4", "segments": segments})
    with caplog.at_level(logging.WARNING, logger="vidcap"):
        assert run_clips([str(gop_video), str(elsewhere), "--out", str(tmp_path / "d")]) == 0
    assert f"is a report of /elsewhere/talk.mp4, not of {gop_video}" in caplog.text


def test_cli_clips_out_on_an_existing_file_names_the_conflict(
    gop_video: Path, tmp_path: Path
) -> None:
    """Regression (#16.8): ``--out`` on a file said only ``error: File exists: …``."""
    report = write(tmp_path, {"segments": [{"start": 2.0, "end": 3.0}]})
    (tmp_path / "taken").write_text("x")
    with pytest.raises(UsageError, match=r"--out .*taken is a file, not a folder: remove it"):
        run_clips([str(gop_video), str(report), "--out", str(tmp_path / "taken")])
    with pytest.raises(UsageError, match=r"--out .*sub: .*taken is a file, not a folder"):
        run_clips([str(gop_video), str(report), "--out", str(tmp_path / "taken" / "sub")])
    assert (tmp_path / "taken").read_text() == "x"


def test_cli_clips_of_a_folder_is_a_usage_error(tmp_path: Path) -> None:
    """Regression: a folder as VIDEO exited 1 ("not a readable video") where a missing one
    exits 2."""
    report = write(tmp_path, {"segments": [{"start": 2.0, "end": 3.0}]})
    with pytest.raises(UsageError, match=r"is a folder; give one video file"):
        run_clips([str(tmp_path), str(report), "--out", str(tmp_path / "c")])


@pytest.mark.parametrize("precise", [False, True])
def test_a_clip_within_one_frame_holds_that_frame(
    gop_video: Path, tmp_path: Path, precise: bool
) -> None:
    """Regression: a segment no frame begins in (2.49–2.51 s: frame 62 shows from 2.48 to
    2.52 s) failed "no frame decodes between …" re-encoded, leaving a clip of no frame
    under its name and no manifest; a stream copy held frames 63 on, not the one shown."""
    out = tmp_path / "c"
    [clip] = export_clips(gop_video, [Segment(2.49, 2.51)], out, precise=precise)
    times, levels, _ = decode(out / clip.path)
    assert levels and all(abs(level - grey(62)) <= 3 for level in levels), levels
    assert times[0] == pytest.approx(0.0, abs=0.001)
    assert clip.mode == ("precise" if precise else "re-encoded")
    assert "within one frame of the source" in (clip.note or "")


@pytest.mark.heavy
def test_a_stopped_run_lists_its_clips_and_the_next_run_removes_them(
    gop_video: Path, tmp_path: Path
) -> None:
    """Regression: `vidcap clips` stopped part-way (Ctrl-C, SIGTERM, kill -9) wrote no
    manifest, so the clips it had cut stayed beside the next run's, listed by none. The
    manifest is written as clips are cut (``"complete": false`` until the last); the
    next run removes what it lists and does not cut again."""
    import signal
    import subprocess
    import sys
    import time

    segments = tmp_path / "segments.json"
    segments.write_text(json.dumps([{"start": i * 0.25, "end": i * 0.25 + 0.2} for i in range(30)]))
    out = tmp_path / "c"
    command = [sys.executable, "-m", "vidcap", "clips", str(gop_video), str(segments)]
    run = subprocess.Popen([*command, "--out", str(out), "--precise"], stderr=subprocess.PIPE)
    manifest = out / "manifest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        try:
            if len(json.loads(manifest.read_text())["clips"]) >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=60) == 130, run.stderr.read().decode()
    stopped = json.loads(manifest.read_text())
    cut = sorted(p.name for p in out.glob("*.mp4"))
    assert stopped["complete"] is False and 2 <= len(cut) < 30
    assert set(cut) <= {c["path"] for c in stopped["clips"]} | set(stopped.get("pending", []))
    (out / "mine.mp4").write_bytes(b"the user's own")
    again = export_clips(gop_video, [Segment(5.0, 6.0)], out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [again[0].path, "manifest.json", "mine.mp4"]
    )
    assert json.loads(manifest.read_text())["complete"] is True


def test_a_folder_cut_again_keeps_only_the_new_clips(gop_video: Path, tmp_path: Path) -> None:
    """Regression: clips into a folder cut before kept the earlier clips beside the new
    manifest, which no longer listed them; a file it never listed is kept."""
    out = tmp_path / "c"
    first = export_clips(gop_video, [Segment(1.0, 2.0), Segment(3.0, 4.0)], out)
    (out / "mine.mp4").write_bytes(b"the user's own")
    again = export_clips(gop_video, [Segment(3.0, 4.0), Segment(5.0, 6.0)], out)
    assert {c.path for c in first}.isdisjoint(c.path for c in again)  # (numbered anew)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [again[0].path, again[1].path, "manifest.json", "mine.mp4"]
    )


def test_clips_and_an_export_never_write_over_each_others_manifest(
    gop_video: Path, tmp_path: Path, capsys
) -> None:
    """Regression: ``vidcap export`` into a clips folder took its manifest for an earlier
    export's and replaced it, and ``vidcap clips`` into an export replaced the FiftyOne
    manifest (both folders then broken)."""
    from tests.support.folders import FakeVideo, write_folder
    from vidcap.cli import main

    clips = tmp_path / "clips"
    export_clips(gop_video, [Segment(1.0, 2.0)], clips)
    before = (clips / "manifest.json").read_bytes()
    out = write_folder(tmp_path / "out", [FakeVideo("v", ("a red car",), source=str(gop_video))])
    assert main(["export", str(out), "--to", "fiftyone", str(clips)]) == 2
    assert "not an earlier export (a `vidcap clips` folder?)" in capsys.readouterr().err
    assert (clips / "manifest.json").read_bytes() == before
    exported = tmp_path / "exported"
    assert main(["export", str(out), "--to", "fiftyone", str(exported)]) == 0
    kept = (exported / "manifest.json").read_bytes()
    with pytest.raises(UsageError, match=r"holds a manifest\.json that `vidcap clips` did not"):
        export_clips(gop_video, [Segment(1.0, 2.0)], exported)
    assert (exported / "manifest.json").read_bytes() == kept
    assert not list(exported.glob("*.mp4"))


def test_cli_clips_of_a_missing_video_is_a_usage_error(tmp_path: Path) -> None:
    """Regression: a VIDEO not there exited 1 where a SEGMENTS file not there exited 2: both
    are named on the command line."""
    report = write(tmp_path, {"segments": [{"start": 2.0, "end": 3.0}]})
    with pytest.raises(UsageError, match=r"nope\.mp4: no such file"):
        run_clips([str(tmp_path / "nope.mp4"), str(report), "--out", str(tmp_path / "c")])


@pytest.mark.parametrize("precise", [False, True])
@pytest.mark.heavy
def test_clips_of_a_variable_frame_rate_video_keep_its_frames(
    tmp_path: Path, precise: bool
) -> None:
    """Regression: a re-encoded clip was written at a constant frame rate (FFmpeg's default
    for MP4), so a variable-frame-rate source (a phone's; here 30 fps, then 10, then a
    60 fps burst in a file whose nominal rate is 30) came out with frames repeated where
    the rate fell and dropped where it rose: 225 frames for 135, or half a burst gone. Each
    clip now holds the source's frames at their own times."""
    rate = "if(lt(N,60),N/30,if(lt(N,120),2+(N-60)/10,8+(N-120)/60))"
    source = encode_with_ffmpeg(
        tmp_path / "vfr.mp4", 180, "30",
        ["-vf", f"settb=1/600,setpts='{rate}/TB'", "-fps_mode", "passthrough",
         "-enc_time_base", "1/600", "-video_track_timescale", "600", "-c:v", "libx264",
         "-g", "30"],
    )  # fmt: skip
    with VideoReader(source) as reader:
        timeline = [(f.time, frame_number(f.rgb)) for f in reader.frames(EVERY)]
    assert len({t for t, _ in timeline}) == 180  # every frame its own time: the case exists
    segments = [Segment(timeline[45][0], timeline[165][0]), Segment(7.5, 9.0)]
    clips = export_clips(source, segments, tmp_path / "out", precise=precise)
    for clip, segment in zip(clips, segments, strict=True):
        with VideoReader(tmp_path / "out" / clip.path) as reader:
            got = [(f.time, frame_number(f.rgb)) for f in reader.frames(EVERY)]
        asked = [(t, n) for t, n in timeline if segment.start <= t < segment.end]
        shown = [n for _, n in got]
        if precise:
            assert shown == [n for _, n in asked], clip
            starts = [t - segment.start for t, _ in asked]
            assert [t for t, _ in got] == pytest.approx(starts, abs=0.002)
        else:  # cut on packets (its ends are a stream copy's): no frame repeated
            assert shown == sorted(set(shown)) and len(shown) >= len(asked) - 2, clip


def test_a_relative_name_with_a_colon_is_a_file_not_a_protocol(
    gop_video: Path, tmp_path: Path, monkeypatch
) -> None:
    # A recorder's timestamped name, given relative as `vidcap clips *.mp4` does: FFmpeg
    # reads "10:30.mp4" as the protocol "10" unless the name is absolute.
    (tmp_path / "10:30.mp4").write_bytes(gop_video.read_bytes())
    monkeypatch.chdir(tmp_path)
    report = write(tmp_path, {"segments": [{"start": 2.0, "end": 3.0, "frames": 1}]})
    assert ffmpeg.probe_with_ffmpeg(Path("10:30.mp4")).codec == "h264"
    assert run_clips(["10:30.mp4", str(report), "--out", "c", "--precise"]) == 0
    times, levels, _ = decode(tmp_path / "c" / "10:30_0001_2.000-3.000.mp4")
    assert len(times) == pytest.approx(FPS, abs=1)
    assert abs(levels[0] - grey(round(2.0 * FPS))) <= 3


@pytest.mark.parametrize("precise", [False, True])
def test_a_link_planted_while_ffmpeg_cuts_is_never_written_through(
    gop_video: Path, tmp_path: Path, monkeypatch, precise: bool
) -> None:
    """A clip's part is made by vidcap and written by ffmpeg through that descriptor
    (``/dev/fd/N``), never by its name: someone sharing the folder who swaps the name for a
    link to a user's file once the part exists (here, the moment ffmpeg starts) had that
    file overwritten by the clip. Now the file is untouched, and the clip fails in one line
    instead of being renamed into place as the link."""
    victim = tmp_path / "victim"
    victim.write_text("a user's file\n")
    real = ffmpeg.run_ffmpeg

    def planted_first(args, *more, **named):  # noqa: ANN001, ANN002, ANN003, ANN202
        [part] = [*(tmp_path / "out").glob("*.part")] or [Path(args[-1])]  # (made by ffmpeg)
        part.unlink(missing_ok=True)
        part.symlink_to(victim)
        return real(args, *more, **named)

    monkeypatch.setattr("vidcap.clips.run_ffmpeg", planted_first)
    try:
        export_clips(gop_video, SEGMENTS[:1], tmp_path / "out", precise=precise)
        error = ""
    except OSError as exc:
        error = str(exc)
    assert victim.read_bytes() == b"a user's file\n"  # (not a clip's bytes)
    assert "replaced while ffmpeg wrote it" in error
    # no clip, no link left; the manifest of a stopped run (to remove a clip left there)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["manifest.json"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["complete"] is False


@pytest.mark.parametrize("name", ["vfr-mp4", "late-mp4", "mpeg4-bframes-avi"])
def test_a_clip_to_the_videos_end_keeps_its_last_frame(
    generated_videos, tmp_path: Path, name: str
) -> None:
    """Regression: a clip was cut at most to the container's duration, which in a
    variable-rate MP4 (no duration stored for its last sample) is where the last frame
    begins, or short of it (the header of a late-starting MP4 gives its length, not its
    end): the last scene's precise clip lost the video's last frame, and its manifest end
    was short of the scene's. A clip now reaches where the picture ends."""
    path, _ = generated_videos[name]
    with VideoReader(path) as reader:
        times = [f.time for f in reader.frames(EVERY)]
        end = reader.stats.duration
    segment = Segment(times[-3], end)
    [clip] = export_clips(path, [segment], tmp_path / "out", precise=True)
    with VideoReader(tmp_path / "out" / clip.path) as reader:
        got = [f.time for f in reader.frames(EVERY)]
    assert got == pytest.approx([t - times[-3] for t in times[-3:]], abs=0.002)
    assert clip.end == pytest.approx(end, abs=0.001)


@pytest.mark.parametrize(
    "codec",
    [["-c:v", "mpeg4", "-vtag", "XVID"], ["-c:v", "mpeg4", "-vtag", "DX50"], ["-c:v", "libx264"]],
)
@pytest.mark.parametrize("precise", [False, True])
def test_clips_of_frames_stored_without_order_show_the_sources_pictures(
    tmp_path: Path, codec: list[str], precise: bool
) -> None:
    """Regression: a clip of an AVI whose frames store no presentation order (B-frames:
    XviD, DivX, H.264) was cut with ffmpeg seeking in the file. FFmpeg 5.1 landed on a frame
    that is no keyframe near the file's start (the first scene's clip opened with ten grey,
    half-built pictures, at the right times) or after the frame asked for (a clip from
    0.6 s began at 0.7 s). Such a clip is now decoded from well before its start: it shows
    the source's frames, each once."""
    path = encode_with_ffmpeg(tmp_path / "b.avi", 40, "25", [*codec, "-bf", "2"])
    with VideoReader(path) as reader:
        frames = [(f.time, frame_number(f.rgb)) for f in reader.frames(EVERY)]
    assert [n for _, n in frames] == list(range(40))
    segments = [Segment(frames[0][0], frames[12][0]), Segment(frames[6][0], frames[21][0])]
    clips = export_clips(path, segments, tmp_path / "out", precise=precise)
    for clip, segment in zip(clips, segments, strict=True):
        with VideoReader(tmp_path / "out" / clip.path) as reader:
            got = [frame_number(f.rgb) for f in reader.frames(EVERY)]
        assert got == [n for t, n in frames if segment.start <= t < segment.end], clip


@pytest.mark.parametrize("name", ["mpeg4-bframes-avi", "xvid-tag-avi", "divx-tag-avi"])
def test_a_clip_of_frames_stored_without_order_begins_with_the_frame_asked_for(
    generated_videos, tmp_path: Path, name: str
) -> None:
    """Regression (the same seek): a clip of a packed-B-frame AVI from its sixth frame
    (0.6 s) began with its seventh, a frame short of what was asked, unnoticed."""
    path, _ = generated_videos[name]
    with VideoReader(path) as reader:
        frames = [(f.time, tuple(int(c) for c in f.rgb[48, 64])) for f in reader.frames(EVERY)]
    segment = Segment(frames[5][0], frames[20][0])
    [clip] = export_clips(path, [segment], tmp_path / "out", precise=True)
    with VideoReader(tmp_path / "out" / clip.path) as reader:
        got = [tuple(int(c) for c in f.rgb[48, 64]) for f in reader.frames(EVERY)]
    asked = [rgb for t, rgb in frames if segment.start <= t < segment.end]
    assert len(got) == len(asked) and np.abs(np.subtract(got, asked)).max() <= 12, clip


def test_a_damaged_timestamp_at_the_end_is_not_where_the_picture_ends(tmp_path: Path) -> None:
    """Review of the clip end: one cluster of a Matroska file with a damaged time (its last,
    stamped 66 s in a 10 s file) made the picture end there: a segment at 30-40 s was cut,
    found empty, and the run failed after writing a clip of nothing. It is refused as
    beyond the video's end, as before."""
    path = encode_with_ffmpeg(
        tmp_path / "m.mkv",
        250,
        "25",
        ["-c:v", "libx264", "-g", "25", "-cluster_time_limit", "1000"],
    )
    data = bytearray(path.read_bytes())
    cluster = data.rfind(b"\x1f\x43\xb6\x75")  # (the last Cluster; its Timecode next)
    timecode = data.find(b"\xe7", cluster + 4, cluster + 30)
    size = data[timecode + 1] & 0x7F
    data[timecode + 2 : timecode + 2 + size] = b"\xff" * size
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(bytes(data))
    with pytest.raises(UsageError, match=r"at or after the end of .*damaged\.mkv \(10\.0"):
        export_clips(damaged, [Segment(8.5, 9.0), Segment(30.0, 40.0)], tmp_path / "out")
