"""The decode stage: ``decode_events`` and the one binary encoding of its events."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import obeying_permissions
from tests.support.videos import VideoSpec, constant_rate, write_video
from vidcap.decode import (
    HEADER,
    Decoded,
    Ended,
    Failed,
    Warned,
    decode_events,
    encode_event,
    read_event,
)
from vidcap.frames import Frame, resize_for_model
from vidcap.inputs import file_sha256
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader

SHAPES = Path(__file__).resolve().parent.parent / "sample_videos" / "shapes.mp4"
SUBJECT = SHAPES.with_name("subject.mp4")
SAMPLING = SamplingSettings(fps=2.0, max_frames=5)


def read_all(data: bytes) -> list:
    stream, events = io.BytesIO(data), []
    while (event := read_event(stream)) is not None:
        events.append(event)
    return events


def test_a_video_is_its_frames_resized_then_its_end() -> None:
    events = list(decode_events(7, str(SHAPES), SAMPLING, (32, 48)))
    with VideoReader(SHAPES) as reader:
        samples = list(reader.samples(SAMPLING))
        model = [sample.for_model((32, 48)) for sample in samples]
        whole = [sample.shown() for sample in samples]
        duration = reader.stats.duration
    assert [type(e) for e in events] == [Decoded] * 5 + [Ended]
    assert all(e.job == 7 for e in events)
    assert [(e.frame.index, e.frame.time) for e in events[:-1]] == [
        (f.index, f.time) for f in whole
    ]
    for event, frame, shown in zip(events, model, whole, strict=False):
        # scaled straight from the decoder's frame: what converting it whole and then
        # resizing it gives, within rounding (chroma at full width)
        assert np.array_equal(event.frame.rgb, frame.rgb)
        assert event.frame.display_size == shown.display_size == (320, 240)
        resized = resize_for_model(shown.rgb, (32, 48)).astype(int)
        assert np.abs(event.frame.rgb.astype(int) - resized).mean() < 2.0
    # --max-frames: the file not read whole, and the end where the next tick would be, not
    # where decoding stopped (the last frame decoded: 2.1 s)
    assert duration == pytest.approx(2.1)
    assert events[-1] == Ended(7, 5, whole[-1].time + 1 / SAMPLING.fps)


def test_an_undecodable_video_is_one_failed_event(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    missing = str(tmp_path / "missing.mp4")
    [failed] = list(decode_events(1, str(broken), SAMPLING, (32, 32)))
    assert isinstance(failed, Failed) and failed.error.startswith(f"{broken}: not a decodable")
    assert list(decode_events(2, missing, SAMPLING, (32, 32))) == [
        Failed(2, f"{missing}: no such file")
    ]
    fifo = tmp_path / "live.mp4"  # a list file's row may name one: never opened, so no hang
    os.mkfifo(fifo)
    [failed] = list(decode_events(3, str(fifo), SAMPLING, (32, 32)))
    assert failed.error == (
        f"{fifo}: is a pipe, not a file: a video is read more than once, so save it to a file first"
    )


def test_a_second_camera_in_the_file_is_named_not_passed_over_in_silence(
    generated_videos, tmp_path: Path
) -> None:
    """Regression: a file of two video streams (a front-and-rear dashcam, a 360° camera's
    two lenses) was captioned from the one a player shows with no word of the other."""
    import subprocess

    import cv2
    import imageio_ffmpeg

    front, spec = generated_videos["h264-mp4"]
    both, covered = tmp_path / "dashcam.mkv", tmp_path / "covered.mkv"
    cover = tmp_path / "cover.jpg"
    cv2.imwrite(str(cover), np.zeros((300, 300, 3), np.uint8))
    ffmpeg = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error"]
    subprocess.run(
        [*ffmpeg, "-i", str(front), "-i", str(SHAPES), "-map", "0:v", "-map", "1:v", "-c",
         "copy", str(both)],
        check=True,
    )  # fmt: skip
    # (FFmpeg's Matroska muxer stores a cover as an ordinary one-picture track: no view)
    subprocess.run(
        [*ffmpeg, "-i", str(cover), "-i", str(front), "-map", "0", "-map", "1", "-c", "copy",
         "-disposition:v:0", "attached_pic", str(covered)],
        check=True,
    )  # fmt: skip
    for path, views in ((both, 2), (front, 1), (covered, 1)):
        events = list(decode_events(1, str(path), SAMPLING, (32, 32)))
        assert isinstance(events[-1], Ended) and events[-1].sampled == 5
        said = [e.message for e in events if isinstance(e, Warned)]
        if views == 1:
            assert said == []
            continue
        height, width = spec.size
        assert said == [
            f"{both}: holds 2 video streams; captioned #0 ({width}x{height}, the one a player "
            "shows), not #1 (320x240); to caption another, copy it out first: ffmpeg -i "
            "dashcam.mkv -map 0:N -c copy dashcam-N.mkv"
        ]


def test_events_round_trip_through_their_encoding() -> None:
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    events = [
        Decoded(3, Frame(index=12, time=1.0 / 3.0, rgb=rgb, damaged=True)),
        Ended(3, 1, 9.876543210123),
        Ended(5, 7, 2.5, scenes=3, lost=41, sha256=hashlib.sha256(b"video").hexdigest()),
        Failed(4, "v.mp4: ünïcode error"),
        Warned(6, "v.mp4: ünïcode warning: cut off"),
    ]
    back = read_all(b"".join(encode_event(e) for e in events))
    assert back[1:] == events[1:]
    frame = back[0].frame
    assert (back[0].job, frame.index, frame.time, frame.damaged) == (3, 12, 1.0 / 3.0, True)
    assert np.array_equal(back[0].frame.rgb, rgb)


def test_warnings_leave_as_events_in_their_place(
    tmp_path: Path, caplog, http_root: tuple[Path, str]
) -> None:
    """Regression: a decoder's warnings (a cut-off file, frames lost) were printed by the
    decoder's process, and a Ray worker's output is not shown with --quiet (otherwise
    prefixed and coloured by Ray): `vidcap caption --ray --quiet` said nothing of a
    cut-off file. They leave as ``Warned`` events, in their place (before the video's end),
    and are not printed there; what is logged meanwhile by the consumer, or by another
    thread, is printed as before. And a URL's warnings and failure named its temporary
    copy (/tmp/vidcap-…), gone after the run; they name the URL."""
    import logging
    import threading
    import time

    spec = VideoSpec("cut", "libx264", ".ts", constant_rate(40, Fraction(10)))
    whole = write_video(tmp_path / "whole.ts", spec).read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(whole[: len(whole) // 2 // 188 * 188 + 100])  # inside a TS packet
    sampling = SamplingSettings(fps=2.0)
    other, mine = logging.getLogger("vidcap.elsewhere"), logging.getLogger("vidcap.consumer")
    stop = threading.Event()

    def chatter() -> None:  # another thread's warnings, while decoding goes on
        while not stop.is_set():
            other.warning("another thread")
            time.sleep(0.001)

    thread = threading.Thread(target=chatter)
    with caplog.at_level(logging.WARNING):
        thread.start()
        events = []
        for event in decode_events(1, str(cut), sampling, (32, 32)):
            mine.warning("the consumer")  # (as vidcap mask shows a Warned)
            events.append(event)
        stop.set()
        thread.join()
    printed = [r.getMessage() for r in caplog.records]
    assert printed.count("the consumer") == len(events)
    assert set(printed) == {"the consumer", "another thread"}
    kinds = [type(e) for e in events]
    warned = [e.message for e in events if isinstance(e, Warned)]
    assert kinds == [Decoded] * kinds.count(Decoded) + [Warned] * len(warned) + [Ended]
    assert warned[0].startswith(f"{cut}: ends inside a transport-stream packet")
    assert warned[1].startswith(f"{cut}: 1 of ") and "could not be decoded" in warned[1]
    assert logging.getLogger("vidcap").propagate  # (as it was)

    root, base = http_root
    (root / "cut.ts").write_bytes(cut.read_bytes())
    (root / "noise.mp4").write_bytes(b"not a video" * 100)
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        remote = list(decode_events(2, f"{base}/cut.ts", sampling, (32, 32)))
        [failed] = list(decode_events(3, f"{base}/noise.mp4", sampling, (32, 32)))
    assert not caplog.records
    assert [e.message for e in remote if isinstance(e, Warned)] == [
        m.replace(str(cut), f"{base}/cut.ts") for m in warned
    ]
    assert failed == Failed(
        3,
        f"{base}/noise.mp4: not a decodable video (FFmpeg cannot open it: Invalid data "
        "found when processing input)",
    )


def test_a_stream_cut_short_ends_where_the_last_whole_event_does() -> None:
    frame = encode_event(Decoded(0, Frame(0, 0.0, np.zeros((2, 2, 3), np.uint8))))
    assert len(read_all(frame + frame[:-1])) == 1
    assert read_all(frame[: HEADER.size - 1]) == []


def test_an_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a vidcap decoder event"):
        read_event(io.BytesIO(HEADER.pack(b"Z", 0, 0, 0.0, 0, 0)))


def test_closing_a_pool_while_its_workers_start_does_not_wait_for_them() -> None:
    """Regression: a worker that started while ``close()`` ran was not killed, and its
    thread waited 5 s for it to exit (an embedded run whose model failed to load paid it).
    Closed at once, several times at slightly different moments, a close takes well under
    those 5 s."""
    import time

    from vidcap.decode_pool import DecodePool

    samples = Path(__file__).resolve().parents[1] / "sample_videos"
    jobs = [(0, str(samples / "shapes.mp4")), (1, str(samples / "subject.mp4"))]
    for delay in (0.0, 0.005, 0.01, 0.02, 0.05):
        pool = DecodePool(jobs, SamplingSettings(), (32, 32), 2, 16)
        time.sleep(delay)
        started = time.monotonic()
        pool.close()
        assert time.monotonic() - started < 3.0, delay


@pytest.mark.parametrize(
    ("name", "args", "untimed", "frames"),
    [
        ("cam.mjpeg", ["-c:v", "mjpeg", "-f", "mjpeg"], True, 90),  # JPEGs back to back
        ("cam.h264", ["-c:v", "libx264", "-f", "h264"], False, 90),  # its SPS says 30 fps
        ("cam.mp4", ["-c:v", "libx264"], False, 90),
        # a still picture given as a video: one frame, no rate to get wrong (was warned)
        ("still.png", ["-c:v", "png", "-f", "image2"], False, 1),
        ("still.webp", ["-c:v", "libwebp", "-f", "webp"], False, 1),
        ("still.jpg", ["-c:v", "mjpeg", "-f", "image2"], False, 1),
    ],
)
def test_a_raw_stream_with_no_rate_says_its_times_are_assumed(
    tmp_path: Path, name: str, args: list[str], untimed: bool, frames: int
) -> None:
    """Regression: a raw MJPEG stream (an IP camera's dump: no container, no timestamps,
    no rate in a JPEG) recorded at 30 fps was timed at FFmpeg's assumed 25 fps — 3 s read
    as 3.6 s — and nothing said so. The decode stage now warns, naming the fix; a stream
    whose codec or container gives its times is not warned about, nor a still picture.
    And ``.mjpeg`` files are found in a folder."""
    from tests.support.videos import encode_with_ffmpeg
    from vidcap.inputs import expand_inputs

    path = encode_with_ffmpeg(tmp_path / name, frames, "30", args)
    events = list(decode_events(0, str(path), SamplingSettings(every_n=1), (32, 32)))
    warned = [e.message for e in events if isinstance(e, Warned)]
    times = [e.frame.time for e in events if isinstance(e, Decoded)]
    assert len(times) == frames
    if frames == 1:
        assert warned == [] and times == [0.0]
        return
    if untimed:
        assert warned == [
            f"{path}: a raw mjpeg stream holds no timestamps and declares no frame rate: its "
            "times assume 25 frames/s (FFmpeg's default); if it was recorded at another rate "
            "R, give it that rate first: ffmpeg -framerate R -i cam.mjpeg -c copy cam.mkv"
        ]
        assert times[1] == pytest.approx(1 / 25)
    else:
        assert warned == [] and times[1] == pytest.approx(1 / 30)
    assert [v.source for v in expand_inputs([str(tmp_path)])] == [str(path)]


def test_a_file_that_names_other_files_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_root: tuple[Path, str]
) -> None:
    """Regression: FFmpeg reads an ffconcat script as the files it names (found by its
    contents, whatever its name) and an HLS playlist as its segments: a dataset's "video"
    that was such a script was captioned as its sibling, and a downloaded one as a file
    beside the download on this machine. Each fails alone, saying why, and nothing it
    names is read; a probe (clips) refuses it too."""
    import tempfile

    from vidcap.container import FOLLOWS
    from vidcap.errors import VideoError
    from vidcap.ffmpeg import probe

    spec = VideoSpec("named", "libx264", ".ts", constant_rate(20, Fraction(10)))
    write_video(tmp_path / "named.ts", spec)
    script = b"ffconcat version 1.0\nfile named.ts\n"
    playlist = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nnamed.ts\n#EXT-X-ENDLIST\n"
    (tmp_path / "script.mp4").write_bytes(script)
    (tmp_path / "list.m3u8").write_bytes(playlist)
    root, base = http_root
    (root / "download.mp4").write_bytes(script)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the download lands beside named.ts
    sampling = SamplingSettings(fps=2.0)
    sources = [str(tmp_path / "script.mp4"), str(tmp_path / "list.m3u8"), f"{base}/download.mp4"]
    for index, source in enumerate(sources):
        events = list(decode_events(index, source, sampling, (32, 32)))
        assert events == [Failed(index, f"{source}: not a decodable video ({FOLLOWS})")]
    for local in sources[:2]:
        with pytest.raises(VideoError, match=f"^{local}: not a readable video \\(it lists other"):
            probe(local)
    named = list(decode_events(9, str(tmp_path / "named.ts"), sampling, (32, 32)))
    assert [type(e) for e in named] == [Decoded] * 4 + [Ended]  # what they would have given


def test_a_decoder_is_killed_before_the_run_where_memory_runs_out() -> None:
    """Regression: the kernel's OOM killer takes the process with the highest score, and a
    decoder holding a huge frame (a video of 5000x5000 PNG frames) is usually smaller than
    the process holding the model: in a 700 MB cgroup beside 400 MB of the run's own, the
    run was killed (exit 137, nothing written) where its decoder now is (that video fails
    alone, the others are captioned). Each decoder raises its own score to the maximum;
    the run's is untouched."""
    import socket
    import time

    from vidcap.decode_pool import DIE_FIRST, OOM_SCORE_ADJ, DecodePool

    if not OOM_SCORE_ADJ.exists():
        pytest.skip("no /proc/self/oom_score_adj: not Linux")
    own = OOM_SCORE_ADJ.read_text()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # a download that never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/clip.mp4"
        pool = DecodePool([(0, url)], SamplingSettings(), (32, 32), 1, 16)
        try:
            deadline, score = time.monotonic() + 30, None
            while time.monotonic() < deadline and score != str(DIE_FIRST):
                if (pid := pool.decoding.get(0)) is not None:
                    score = Path(f"/proc/{pid}/oom_score_adj").read_text().strip()
                time.sleep(0.05)
        finally:
            pool.close()
    assert score == str(DIE_FIRST)
    assert OOM_SCORE_ADJ.read_text() == own


def slow_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Decoder processes started from now on take ``seconds`` to start: a ``sitecustomize``
    that sleeps, as importing PyAV and numpy does on a loaded machine."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import time\ntime.sleep({seconds})\n")
    path = os.pathsep.join(filter(None, (str(site), os.environ.get("PYTHONPATH"))))
    monkeypatch.setenv("PYTHONPATH", path)


def pool_results(pool) -> dict[int, object]:
    try:
        return {e.job: e for e in pool.events() if isinstance(e, (Ended, Failed))}
    finally:
        pool.close()


@pytest.mark.heavy
def test_a_decoder_slow_to_start_is_not_a_stalled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the --decode-timeout clock started when a job was written to a fresh
    decoder still importing PyAV and numpy, so a short timeout on a loaded machine failed
    good videos ("sent nothing for 1 s"). The clock now starts once the decoder says it is
    ready; its start has a limit of its own."""
    from vidcap.decode_pool import DecodePool

    slow_start(tmp_path, monkeypatch, 2.5)
    jobs = [(0, str(SHAPES)), (1, str(SHAPES))]
    pool = DecodePool(jobs, SAMPLING, (32, 32), 2, 16, stall_timeout=1.0)
    ended = pool_results(pool)
    assert sorted(ended) == [0, 1]
    for event in ended.values():
        assert isinstance(event, Ended), event
        assert event.sampled == 5


@pytest.mark.heavy
def test_a_decoder_that_never_starts_fails_its_video_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoder hung while it starts (an import from a stuck network mount) is stopped
    after its start limit, failing its video with that reason, not waited for forever."""
    from vidcap.decode_pool import DecodePool

    slow_start(tmp_path, monkeypatch, 60)
    pool = DecodePool([(0, str(SHAPES))], SAMPLING, (32, 32), 1, 16, 1.0, start_timeout=1.5)
    [failed] = pool_results(pool).values()
    assert isinstance(failed, Failed)
    assert failed.error == f"{SHAPES}: the decoder did not start within 1.5 s; stopped"


@pytest.mark.parametrize("change", ["renamed over", "written", "touched"])
def test_a_file_changed_while_it_is_decoded_is_not_vouched_for(tmp_path: Path, change: str) -> None:
    """Regression: the SHA-256 a record keeps was read by opening the path again after
    decoding: a file renamed over it meanwhile (a sync, a download; padded to the same size)
    gave the record the new file's digest beside the old one's captions, and a rerun then
    kept those captions "by their bytes" for good. Now the file read must be the file whose
    decoding began: else the video fails, saying so, and a rerun captions it as it is."""
    video = tmp_path / "clip.mp4"
    shutil.copy(SHAPES, video)
    other = tmp_path / "other.mp4"
    shutil.copy(SUBJECT, other)
    with other.open("r+b") as file:  # the same size as the video
        file.truncate(video.stat().st_size)
    every = SamplingSettings(fps=2.0)
    events = decode_events(3, str(video), every, (32, 32))
    first = next(events)
    assert isinstance(first, Decoded)
    if change == "renamed over":
        os.replace(other, video)
    elif change == "written":
        with video.open("r+b") as file:
            file.seek(-4, os.SEEK_END)
            file.write(b"\0\0\0\0")
    else:
        os.utime(video, ns=(0, 0))
    *_, last = events
    assert isinstance(last, Failed), last
    assert last.error == (
        f"{video}: the file changed while it was decoded (written, replaced or touched): "
        "its captions are not kept; run again to caption it as it is now"
    )
    # unchanged, a file ends with the digest of its bytes
    shutil.copy(SHAPES, video)
    *_, ended = decode_events(3, str(video), every, (32, 32))
    assert isinstance(ended, Ended) and ended.sha256 == file_sha256(video)


def test_a_file_this_process_may_not_read_is_said_as_such(tmp_path: Path) -> None:
    """Regression: an unreadable file failed as "not a decodable video (FFmpeg cannot open
    it: Permission denied)": nothing is wrong with the video, only its permissions. As root
    the read is refused with the file-permission capabilities dropped (``setpriv``)."""
    import subprocess
    import sys

    video = tmp_path / "locked.mp4"
    shutil.copy(SHAPES, video)
    video.chmod(0)
    script = (
        "from vidcap.decode import decode_events; from vidcap.settings import SamplingSettings;"
        f"print(list(decode_events(1, {str(video)!r}, SamplingSettings(), (32, 32)))[-1].error)"
    )
    command = obeying_permissions([sys.executable, "-c", script])
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == f"{video}: cannot read it (Permission denied)", result.stderr
