"""Find an ffmpeg binary, run it, and probe media files.

ffmpeg is the system one on ``PATH`` when there is one, else the static binary the
``imageio-ffmpeg`` wheel ships (a core dependency, so one is always there after
``pip install vidcap``). Probing uses PyAV when it is installed (exact durations and
frame counts) and otherwise reads what ``ffmpeg -i`` prints (durations to 10 ms).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from vidcap.errors import VidcapError, VideoError

log = logging.getLogger(__name__)

FFMPEG_MISSING = "ffmpeg not found: install ffmpeg on PATH or the imageio-ffmpeg package (pip install imageio-ffmpeg)"
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"([\d.]+) fps")


# Demuxers that open what a file names (an ffconcat script's files, an HLS playlist's or a
# DASH or IMF manifest's segments, an SDP session's network streams, a DVD folder's files),
# run what it says (an AviSynth or VapourSynth script), or read the network or a device:
# never used. A video is decoded as itself; a downloaded "video" that is a concat script
# would otherwise be captioned as the files it names, local ones included.
FOLLOWING_DEMUXERS = frozenset(
    {"concat", "hls", "dash", "imf", "sdp", "rtp", "rtsp", "sap", "webm_dash_manifest",
     "avisynth", "vapoursynth", "dvdvideo", "lavfi", "libcdio", "alsa", "oss", "pulse",
     "jack", "openal", "fbdev", "kmsgrab", "x11grab", "iec61883", "decklink",
     "dshow", "gdigrab", "avfoundation", "android_camera", "libdc1394",
     "video4linux2,v4l2"}
)  # fmt: skip
FOLLOWS = (
    "it lists other files or streams for FFmpeg to open: an ffconcat script, an HLS playlist, "
    "a DASH manifest or an SDP session, which vidcap does not follow; join what it names "
    "into one file first, e.g. ffmpeg -i LIST -c copy OUT.mp4"
)
_NOT_ALLOWED = "not on whitelist"  # libavformat's words when an input's demuxer is refused


def follows(name: str) -> bool:
    """Whether the demuxer ``name`` (FFmpeg's, its aliases joined by commas) is one of
    ``FOLLOWING_DEMUXERS``."""
    return name in FOLLOWING_DEMUXERS or not FOLLOWING_DEMUXERS.isdisjoint(name.split(","))


class FfmpegError(VidcapError):
    """ffmpeg ran but failed; the message carries every error line of its stderr, in one line."""


@dataclass(frozen=True)
class MediaInfo:
    """What a probe found. ``frames`` is None when the container does not say; ``stream``:
    the video stream's index in the file (None: not known, the first); ``transparent``: it
    has an alpha channel, which ``decoder`` (when not None) must decode for ffmpeg to see;
    ``headerless``: the file says no duration (an elementary stream: ``.h264``, ``.m2v``),
    so ``duration`` was read from its packets, and its demuxer cannot seek by time."""

    path: Path
    duration: float
    width: int
    height: int
    fps: float
    codec: str
    frames: int | None = None
    stream: int | None = None
    transparent: bool = False
    decoder: str | None = None
    headerless: bool = False


def find_ffmpeg(explicit: str | None = None) -> str:
    """The ffmpeg to run: ``explicit`` if given, else ``ffmpeg`` on PATH, else the wheel's binary."""
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise VidcapError(f"ffmpeg {explicit!r} not found or not executable")
        return found
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise VidcapError(FFMPEG_MISSING) from exc


_LOG_PREFIX = re.compile(r"^\[[\w#:/ .-]+ @ 0x[0-9a-f]+\]\s*")
MESSAGE_CHARS = 600


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def error_message(stderr: str) -> str:
    """ffmpeg's error lines joined into one: the cause usually comes first, the last line
    only says that writing failed ("Could not write header … Invalid argument")."""
    lines = [_LOG_PREFIX.sub("", line.strip()) for line in stderr.splitlines() if line.strip()]
    message = "; ".join(dict.fromkeys(lines)) or "no message"
    return message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 1] + "…"


def run_ffmpeg(args: list[str], ffmpeg: str | None = None, pass_fds: Sequence[int] = ()) -> None:
    """Run ``ffmpeg -nostdin -hide_banner -v error ARGS``, each input (``-i``) opened only
    by the demuxers ``program_demuxers`` allows; FfmpegError with its error lines, or
    VideoError when an input is one it does not allow. ``pass_fds``: descriptors ffmpeg
    inherits (an output it writes as ``/dev/fd/N``)."""
    program = find_ffmpeg(ffmpeg)
    command = [program, "-nostdin", "-hide_banner", "-v", "error", *allowlisted(args, program)]
    log.debug("running %s", command)
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, pass_fds=tuple(pass_fds)
    )
    if result.returncode != 0:
        if _NOT_ALLOWED in result.stderr:  # (a video, not ffmpeg, at fault: not retried)
            inputs = dict.fromkeys(args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "-i")
            raise VideoError(f"{', '.join(inputs)}: not a decodable video ({FOLLOWS})")
        raise FfmpegError(
            f"ffmpeg failed (exit {result.returncode}): {error_message(result.stderr)}"
        )


def allowlisted(args: list[str], program: str) -> list[str]:
    """``args`` with ``-format_whitelist`` (``program_demuxers``) before each ``-i``."""
    allowed = ["-format_whitelist", program_demuxers(program)]
    return [part for arg in args for part in ([*allowed, arg] if arg == "-i" else [arg])]


_DEMUXER_LINE = re.compile(r"^ (?P<flags>[D.][E. ]?[d ]?) (?P<name>\S+)")


@functools.lru_cache(maxsize=4)
def program_demuxers(program: str) -> str:
    """Every demuxer of the ``ffmpeg`` program ``program`` but devices and
    ``FOLLOWING_DEMUXERS``: its ``-format_whitelist``, as PyAV's inputs get theirs
    (``vidcap.container.allowed_demuxers``). The program is another FFmpeg than PyAV's
    (the system's, or the wheel's static build) with demuxers of its own (DASH, IMF and
    AviSynth in both here, none in PyAV's), so it is asked for its own list
    (``ffmpeg -demuxers``; FFmpeg 6.1 on flags devices ``d``, earlier ones are named)."""
    result = subprocess.run(
        [program, "-hide_banner", "-demuxers"], capture_output=True, text=True, check=False
    )
    names, listed = [], False
    for line in result.stdout.splitlines():
        listed = listed or line.strip().startswith("--")  # (the legend above it)
        found = _DEMUXER_LINE.match(line) if listed else None
        if found and found["flags"].startswith("D") and "d" not in found["flags"]:
            names.append(found["name"])
    allowed = sorted(name for name in names if not follows(name))
    if not allowed:
        raise VidcapError(f"{program} -demuxers listed no demuxer: is it FFmpeg's ffmpeg?")
    return ",".join(allowed)


@functools.lru_cache(maxsize=4)
def every_frame_at_its_time(ffmpeg: str | None = None) -> tuple[str, ...]:
    """Output options that keep each frame at its own time when re-encoding: FFmpeg's
    default for MP4 is a constant frame rate, which duplicates and drops frames to fit it
    (a variable-frame-rate phone video; a 60 fps burst in a 30 fps file). ``-fps_mode vfr``
    (FFmpeg 5.1 on; ``-vsync vfr`` before, which FFmpeg 7 removed) drops only a frame whose
    time equals the one before it, and a 90 kHz encoder clock (MPEG's) keeps frames apart
    that the default clock, one tick per nominal frame, would give one time."""
    result = subprocess.run(
        [find_ffmpeg(ffmpeg), "-hide_banner", "-h", "long"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip

    def known(option: str) -> bool:
        return re.search(rf"^-{option}\b", result.stdout, re.MULTILINE) is not None

    mode = ("-fps_mode" if known("fps_mode") else "-vsync", "vfr")
    return (*mode, "-enc_time_base:v", "1/90000") if known("enc_time_base") else mode


def probe(path: Path | str) -> MediaInfo:
    """Duration (s), size, frame rate and codec of the video stream of ``path`` (the one
    ``vidcap.container.video_stream`` picks)."""
    path = Path(path)
    if (reason := not_a_video_file(path)) is not None:
        raise VideoError(f"{path}: {reason}")
    try:
        import av  # noqa: F401
    except ImportError:
        return probe_with_ffmpeg(path)
    return probe_with_pyav(path)


def probe_duration(path: Path | str) -> float:
    return probe(path).duration


def local_name(path: Path | str) -> str:
    """A local file's name as FFmpeg (libavformat, or the ``ffmpeg`` program) must be given
    it: absolute. A relative name with a colon before its first slash (``10:30.mp4``, a
    recorder's timestamp) is otherwise read as a protocol (``Protocol not found``)."""
    return os.path.abspath(path)


_SPECIAL = (
    (stat.S_ISFIFO, "a pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def not_a_video_file(path: Path | str) -> str | None:
    """Why ``path`` cannot be read as a video file (``None`` when it is a regular file): a
    video is opened more than once (probe, decode, a second pass after damage), so a pipe
    (``<(curl …)``, a FIFO) is refused by name rather than read as empty or missing."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "is a folder, not a video"
    for test, kind in _SPECIAL:
        if test(mode):
            return (
                f"is {kind}, not a file: a video is read more than once, so save it to a file first"
            )
    return None


def probe_with_pyav(path: Path) -> MediaInfo:
    import av

    from vidcap.container import (
        alpha_decoder,
        is_transparent,
        nominal_rate,
        open_input,
        the_video_stream,
        unopened,
    )

    try:
        container = open_input(path)
    except av.FFmpegError as exc:
        raise unopened(path, exc, "not a readable video") from exc
    try:
        with container:
            stream = the_video_stream(container, path)
            headerless = container.duration is None and stream.duration is None
            duration = _pyav_duration(container, stream)
            rate = nominal_rate(container, stream) or 0
            return MediaInfo(
                path=path,
                duration=duration,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                fps=float(rate),
                codec=stream.codec_context.name,
                frames=stream.frames or None,
                stream=stream.index,
                transparent=is_transparent(stream),
                decoder=alpha_decoder(stream),
                headerless=headerless,
            )
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: not a readable video ({exc.strerror or exc})") from exc


def _pyav_duration(container, stream) -> float:
    if container.duration is not None:
        return container.duration / 1_000_000
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    end = packets_end(container, stream)  # an elementary stream (.h264, .m2v): no header
    if end is None:
        raise VideoError(f"{container.name}: the container does not say how long it is")
    return end


def playable_end(path: Path | str) -> float | None:
    """When the last of a file's packets ends, every stream's (``packets_end``): the end
    of its last frame or of its sound, whichever is later — how long a clip plays. None
    where no packet says, or without PyAV."""
    try:
        import av
    except ImportError:
        return None
    from vidcap.container import open_input

    try:
        with open_input(Path(path)) as container:
            return packets_end(container)
    except av.FFmpegError:
        return None


def packets_end(container, stream=None, unknown: float = 0.0) -> float | None:
    """When the last of ``stream``'s packets ends (s; every stream's where None), read from
    the packets themselves (demuxed, not decoded): the latest pts plus its duration
    (``unknown`` for a packet that gives none), or, for one stream whose packets carry no
    times at all (raw H.264), the sum of their durations. None if neither is known."""
    latest = total = None
    for packet in container.demux(*([stream] if stream is not None else [])):
        if packet.size == 0 or packet.time_base is None:  # (the demuxer's flush packets)
            continue
        length = packet.duration * packet.time_base if packet.duration else Fraction(unknown)
        total = length if total is None else total + length
        if packet.pts is not None:
            end = packet.pts * packet.time_base + length
            latest = end if latest is None else max(latest, end)
    if latest is None and stream is not None:
        latest = total
    return float(latest) if latest else None


def probe_with_ffmpeg(path: Path, ffmpeg: str | None = None) -> MediaInfo:
    """Probe by reading ``ffmpeg -i`` (which exits 1: no output named) — no ffprobe needed."""
    program = find_ffmpeg(ffmpeg)
    command = [program, "-nostdin", "-hide_banner", *allowlisted(["-i", local_name(path)], program)]
    stderr = subprocess.run(command, capture_output=True, text=True, check=False).stderr
    if _NOT_ALLOWED in stderr:
        raise VideoError(f"{path}: not a readable video ({FOLLOWS})")
    return parse_ffmpeg_info(path, stderr)


def parse_ffmpeg_info(path: Path, stderr: str) -> MediaInfo:
    duration = _DURATION.search(stderr)
    stream = _VIDEO_STREAM.search(stderr)
    if stream is None:
        raise VideoError(f"{path}: not a readable video ({last_line(stderr)})")
    if duration is None:
        raise VideoError(f"{path}: the container does not say how long it is")
    hours, minutes, seconds = duration.groups()
    rest_of_line = (stderr[stream.end() :].splitlines() or [""])[0]
    fps = _FPS.search(rest_of_line)
    return MediaInfo(
        path=path,
        duration=int(hours) * 3600 + int(minutes) * 60 + float(seconds),
        width=int(stream.group(2)),
        height=int(stream.group(3)),
        fps=float(fps.group(1)) if fps else 0.0,
        codec=stream.group(1),
    )
