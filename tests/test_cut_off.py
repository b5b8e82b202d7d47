"""Files cut off (interrupted downloads, recordings that lost power) in the formats whose
end FFmpeg does not check: the missing tail is warned about and counted lost, never passed
over in silence; a whole file is not. (MP4, Matroska, MPEG-TS, Ogg, AVI: tests/test_video.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.videos import check_cut_off_files, cut_off_said, encode_with_ffmpeg
from vidcap.settings import SamplingSettings
from vidcap.torn import PS_END, PS_PACK
from vidcap.video import VideoReader


@pytest.mark.parametrize("kept", [0.9, 0.5])
def test_an_asf_file_cut_off_by_any_amount_counts_what_is_missing(
    tmp_path: Path, caplog, kept: float
) -> None:
    """Regression: a WMV cut off by 5 % or more was captioned as far as it went with no
    word (FFmpeg drops the header's duration once the file's size differs from the one it
    states), while one cut off by less was warned about: the header's own length now counts
    the frames missing, whatever was cut."""
    whole = encode_with_ffmpeg(tmp_path / "whole.wmv", 150, "25", ["-c:v", "wmv2"])
    data = whole.read_bytes()
    cut = tmp_path / "cut.wmv"
    cut.write_bytes(data[: int(len(data) * kept)])
    said, lost = cut_off_said(cut, SamplingSettings(fps=1.0), "could not be decoded", caplog)
    with VideoReader(cut) as reader:
        decoded = len(list(reader.frames(SamplingSettings(every_n=1))))
    assert len(said) == 1 and lost == 150 - decoded > 0, (said, lost, decoded)
    assert f"{lost} of 150 frames" in said[0]
    assert cut_off_said(whole, SamplingSettings(fps=1.0), "could not be decoded", caplog) == ([], 0)


@pytest.mark.parametrize("muxer", ["vob", "mpeg"])
def test_an_mpeg_program_stream_cut_inside_a_pack_warns(tmp_path: Path, caplog, muxer: str) -> None:
    """Regression: a DVD VOB or an .mpg cut off inside a pack was captioned as far as it
    went with no word (MPEG-PS states no length). Packs are followed from the end: one the
    file ends inside is a cut; a cut between packs, an end code or padding after the last
    pack is not seen as one."""
    codec = "mpeg2video" if muxer == "vob" else "mpeg1video"
    whole = encode_with_ffmpeg(tmp_path / "w.mpg", 100, "25", ["-c:v", codec, "-f", muxer])
    data = whole.read_bytes()
    packs = [i for i in range(len(data)) if data.startswith(PS_PACK, i)]
    middle = packs[len(packs) // 2]
    files = {  # name: does it end inside a pack?
        "whole": (data, False),
        "cut between packs": (data[:middle], False),
        "cut inside a pack": (data[: middle + 700], True),
        "cut inside a pack header": (data[: middle + 7], True),
        "padded": (data + bytes(2048), False),
        "with an end code": (data + PS_END, False),
    }
    check_cut_off_files(tmp_path, files, ".mpg", "MPEG program-stream pack", caplog)


def test_a_gif_cut_inside_an_image_warns(tmp_path: Path, caplog) -> None:
    """Regression: an animated GIF cut off inside an image (its last frame half drawn) was
    captioned with no word. Its blocks are followed: one the file ends inside is a cut; a
    GIF missing only its trailer byte has every image whole."""
    whole = encode_with_ffmpeg(tmp_path / "w.gif", 30, "10", [], size=(60, 80))
    data = whole.read_bytes()
    assert data.endswith(b"\x3b")
    files = {  # name: does it end inside an image?
        "whole": (data, False),
        "no trailer": (data[:-1], False),
        "cut inside an image": (data[: len(data) * 7 // 10], True),
    }
    check_cut_off_files(tmp_path, files, ".gif", "GIF image", caplog)


def test_a_dv_capture_cut_inside_a_frame_warns(tmp_path: Path, caplog) -> None:
    """Regression: a raw DV capture cut off inside a frame was captioned with no word (and
    its frame count read as 60,000 a second: PyAV's average rate for DV is its time base).
    Frames of raw DV have one size: a file that is no multiple of it ends inside one."""
    whole = encode_with_ffmpeg(
        tmp_path / "w.dv", 10, "25", ["-c:v", "dvvideo", "-pix_fmt", "yuv420p"], size=(576, 720)
    )
    data = whole.read_bytes()
    frame = 144_000  # (625 lines, 50 Hz: DV25's PAL frame)
    assert len(data) == 10 * frame
    files = {  # name: does it end inside a frame?
        "whole": (data, False),
        "cut between frames": (data[: 6 * frame], False),
        "cut inside a frame": (data[: 6 * frame + 5000], True),
    }
    check_cut_off_files(tmp_path, files, ".dv", "DV frame", caplog)
    said, lost = cut_off_said(
        tmp_path / "cut inside a frame.dv", SamplingSettings(fps=1.0), "frames could not", caplog
    )
    # 7 decoded (the torn one too) and at least 1 lost; not 1 of 14,483 (at 60,000 a second)
    assert len(said) == 1 and "1 of 8 frames" in said[0] and lost == 1, said


@pytest.mark.parametrize("suffix", [".dv", ".avi", ".gif"])
def test_the_frame_a_cut_tears_is_marked_damaged(tmp_path: Path, suffix: str) -> None:
    """Regression: the last frame of a DV capture cut inside it decodes mostly black (a GIF's
    half drawn, an MJPEG AVI's half grey) and was captioned as a whole picture. The frame
    of the packet the file's end cuts through is marked damaged, in every mode that takes
    it; every other frame, and a whole file's last, is not."""
    args = {
        ".dv": (["-c:v", "dvvideo", "-pix_fmt", "yuv420p"], (576, 720)),
        ".avi": (["-c:v", "mjpeg"], (120, 160)),
        ".gif": ([], (60, 80)),
    }[suffix]
    whole = encode_with_ffmpeg(tmp_path / f"whole{suffix}", 10, "25", args[0], size=args[1])
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 3 // 4])
    for sampling in (SamplingSettings(every_n=1), SamplingSettings(fps=25.0, mode="exact")):
        with VideoReader(cut) as reader:
            marks = [sample.damaged for sample in reader.samples(sampling)]
        assert marks == [False] * (len(marks) - 1) + [True], (sampling, marks)
        with VideoReader(whole) as reader:
            assert not any(sample.damaged for sample in reader.samples(sampling))


def test_a_y4m_file_cut_inside_a_frame_warns(tmp_path: Path, caplog) -> None:
    """Regression: a Y4M sequence (raw YUV, as test sequences are shared) cut off inside a
    frame lost that frame with no word: FFmpeg drops a frame it cannot read whole. Its frames
    are followed from the header: one the file ends inside is a cut; bytes after the last
    frame that are no frame are not."""
    whole = encode_with_ffmpeg(tmp_path / "w.y4m", 10, "25", ["-pix_fmt", "yuv420p"])
    data = whole.read_bytes()
    frame = len(b"FRAME\n") + 128 * 96 * 3 // 2
    header = len(data) - 10 * frame
    assert data[header : header + 6] == b"FRAME\n"
    files = {  # name: does it end inside a frame?
        "whole": (data, False),
        "cut between frames": (data[: header + 4 * frame], False),
        "cut inside a frame": (data[: header + 4 * frame + 1000], True),
        "cut inside a frame's header": (data[: header + 4 * frame + 3], True),
        "trailing bytes": (data + b"not a frame", False),
    }
    check_cut_off_files(tmp_path, files, ".y4m", "Y4M frame", caplog)


def test_an_ivf_file_counts_its_length_whichever_ffmpeg_wrote_its_header(
    tmp_path: Path, caplog
) -> None:
    """Regression: an IVF file (VP8, VP9 or AV1 as FFmpeg copies it out of WebM or MP4)
    whose header FFmpeg 5.1 wrote holds its duration in time-base units where the frame
    count goes (2000 for 2 s in milliseconds); FFmpeg 8 reads that as 2000 frames, and
    every whole file warned "1950 of 2000 frames could not be decoded", in every mode,
    recording 1950 lost frames. Either header now counts what a cut-off file misses, and
    a whole file nothing."""
    import struct
    import subprocess

    import imageio_ffmpeg

    webm = encode_with_ffmpeg(
        tmp_path / "w.webm", 50, "25", ["-c:v", "libvpx", "-deadline", "realtime", "-g", "10"]
    )
    whole = tmp_path / "w.ivf"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(webm), "-c", "copy",
         str(whole)],
        check=True,
    )  # fmt: skip
    data = whole.read_bytes()
    den, num, count = struct.unpack_from("<3I", data, 16)
    assert (den, num, count) == (1000, 1, 50)  # (FFmpeg 9's header: the frame count)
    # FFmpeg 5.1's header: the duration, 2 s in the time base
    old = data[:24] + struct.pack("<I", 2000) + data[28:]
    ends, at = [], 32  # where each frame ends (a 12-byte header, then its bytes)
    while at < len(data):
        at += 12 + struct.unpack_from("<I", data, at)[0]
        ends.append(at)
    half = ends[24]  # 25 whole frames
    for label, content, lost in [
        ("count", data, 0),
        ("duration", old, 0),
        ("count-cut", data[:half], 25),
        ("duration-cut", old[:half], 25),
    ]:
        path = tmp_path / f"{label}.ivf"
        path.write_bytes(content)
        for sampling in (SamplingSettings(fps=1.0), SamplingSettings(every_n=1, mode="all")):
            said, counted = cut_off_said(path, sampling, "could not be decoded", caplog)
            assert counted == lost, (label, sampling, said)
            assert [f"{lost} of 50 frames" in line for line in said] == [True] * bool(lost)


def _recording(path: Path, movflags: str, muxer: str = "mp4") -> bytes:
    """Four seconds of numbered frames (30 fps, keyframes each second, B-frames) and sound,
    as OBS Studio records them: ``-movflags movflags`` (a fragment per keyframe)."""
    args = [
        "-f", "lavfi", "-i", "sine=duration=4", "-c:v", "libx264", "-g", "30", "-c:a", "aac",
        "-shortest", "-f", muxer, "-movflags", movflags,
    ]  # fmt: skip
    return encode_with_ffmpeg(path, 120, "30", args).read_bytes()


def _top_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, length) of an MP4's top-level boxes."""
    boxes, at = [], 0
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        boxes.append((data[at + 4 : at + 8], at, length))
        at += length
    return boxes


def _sampled(path: Path, sampling: SamplingSettings | None) -> tuple[list, float, int]:
    """(index, time, frame number) of each sample (every decoded frame where None), the
    video's duration and its frames counted lost."""
    from tests.support.videos import frame_number

    with VideoReader(path) as reader:
        frames = reader.decoded_frames() if sampling is None else reader.samples(sampling)
        got = [
            (s.index, round(s.time, 4), frame_number(s.av_frame.to_ndarray(format="rgb24")))
            for s in frames
        ]
    return got, round(reader.stats.duration, 4), reader.stats.lost_frames


@pytest.mark.parametrize("muxer", ["mp4", "mov"])
def test_a_fragmented_mp4_cut_inside_a_fragment_warns(tmp_path: Path, caplog, muxer: str) -> None:
    """Regression: a fragmented MP4 or MOV (OBS Studio's crash-safe recording) cut off
    inside a fragment was captioned as far as FFmpeg read it with no word: the fragments
    after the cut were silently gone. Its top-level boxes are followed: a 'moof' or 'mdat'
    the file ends inside is a cut; a cut between fragments, or inside the index after the
    last ('mfra'), is not seen as one."""
    data = _recording(tmp_path / f"w.{muxer}", "frag_keyframe+empty_moov", muxer)
    boxes = _top_boxes(data)
    moofs = [at for kind, at, _ in boxes if kind == b"moof"]
    mdat = next((at, length) for kind, at, length in boxes if kind == b"mdat" and at > moofs[1])
    assert boxes[-1][0] == b"mfra" and len(moofs) == 4, boxes
    files = {  # name: does it end inside a fragment?
        "whole": (data, False),
        "cut between fragments": (data[: moofs[2]], False),
        "cut in its last index": (data[: boxes[-1][1] + 20], False),
        "cut inside a fragment's samples": (data[: mdat[0] + mdat[1] // 2], True),
        "cut inside a fragment's index": (data[: moofs[2] + 100], True),
    }
    check_cut_off_files(tmp_path, files, f".{muxer}", "MP4 fragment", caplog)


def test_a_fragmented_mp4_cut_inside_a_moof_keeps_its_whole_fragments(tmp_path: Path) -> None:
    """Regression: a fragmented MP4 cut off inside a fragment's 'moof' box failed whole
    ("FFmpeg cannot open it: Invalid data found"): FFmpeg reads every 'moof' as it opens
    the file. It is opened up to its whole fragments, whose frames are captioned as the
    file cut there gives them, in every mode; cut inside its first 'moof', nothing is
    whole, and the one line says so."""
    from vidcap.errors import VideoError

    data = _recording(tmp_path / "w.mp4", "frag_keyframe+empty_moov")
    moofs = [at for kind, at, _ in _top_boxes(data) if kind == b"moof"]
    cut, whole = tmp_path / "cut.mp4", tmp_path / "whole-fragments.mp4"
    cut.write_bytes(data[: moofs[3] + 100])
    whole.write_bytes(data[: moofs[3]])
    for sampling in (SamplingSettings(fps=1.0), SamplingSettings(every_n=7, fps=None), None):
        frames, duration, lost = _sampled(cut, sampling)
        assert (frames, duration) == _sampled(whole, sampling)[:2], sampling
        assert len(frames) == (90 if sampling is None else 4 if sampling.fps else 13)
        assert lost >= 1
    first = tmp_path / "first.mp4"
    first.write_bytes(data[: moofs[0] + 100])
    with pytest.raises(VideoError, match=r"cut off inside its first fragment \('moof' box\)"):
        _sampled(first, None)


@pytest.mark.parametrize("movflags", ["faststart", "frag_keyframe+empty_moov"])
def test_an_mp4_cut_inside_a_frame_ends_alike_in_every_mode(tmp_path: Path, movflags: str) -> None:
    """Regression: an MP4 (plain or fragmented) cut off inside a frame's bytes lasted
    4.367 s with 19 frames lost at --fps 1 and 4.233 s with 24 lost with --decode-mode all:
    FFmpeg reads what is left of the packet the cut tears (flagged corrupt), which H.264
    cannot decode; the modes that skip frames skipped it, and its time moved the end, so
    --every-n also numbered the frames after it one too high. That packet is decoded in
    every mode now: each ends at the last frame that decodes (as ffprobe lists them), with
    one count of frames lost, and the same samples as decoding every frame gives."""
    import av

    data = _recording(tmp_path / "w.mp4", movflags)
    with av.open(str(tmp_path / "w.mp4")) as container:
        video = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    for at, size in video[94:97]:  # (a P-frame and the B-frames shown before it)
        path = tmp_path / f"cut-{at}.mp4"
        path.write_bytes(data[: at + size // 2])
        every, end, lost = _sampled(path, None)
        assert lost >= 1 and every, (at, lost)
        for sampling in (
            SamplingSettings(fps=1.0),
            SamplingSettings(fps=1.0, mode="all"),
            SamplingSettings(every_n=7, fps=None),
            SamplingSettings(keyframes=True),
        ):
            frames, duration, counted = _sampled(path, sampling)
            assert (duration, counted) == (end, lost), (at, sampling)
            if sampling.keyframes:
                continue
            taken = [f for f in every if f[0] % 7 == 0] if sampling.every_n else None
            assert taken is None or frames == taken, (at, frames[-3:], taken[-3:])
        assert end == pytest.approx(every[-1][1] + 1 / 30, abs=1e-3), (at, end, every[-3:])
