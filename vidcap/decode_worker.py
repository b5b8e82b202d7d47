"""Decode a video in a child process; frames stream back over a pipe as raw RGB.

Why a process: decoding in a thread of the captioning process competes for the GIL with
``generate`` (which launches CUDA kernels from Python), and a decoder crash on a hostile
file would take the whole bulk run down. In a child, decoding has its own interpreter
and a crash fails that one video.

The pipe carries no pickle: each message is a fixed header (kind, index, pts, height,
width) then raw bytes — an RGB frame (kind ``F``), the final stats as JSON (``E``), or a
one-line error (``X``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO

import numpy as np

from vidcap.errors import VideoError
from vidcap.frames import Frame, resize_for_model
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader, VideoStats

HEADER = struct.Struct("<cqdII")  # kind, index (or payload length), pts, height, width


def stream_frames(
    path: Path, sampling: SamplingSettings, size: tuple[int, int], out: IO[bytes]
) -> None:
    """The child's side: decode, resize to ``size``, write messages to ``out``."""
    try:
        with VideoReader(path) as reader:
            for frame in reader.frames(sampling):
                rgb = resize_for_model(frame.rgb, size)
                out.write(HEADER.pack(b"F", frame.index, frame.pts_seconds, *rgb.shape[:2]))
                out.write(rgb.tobytes())
            payload = json.dumps(asdict(reader.stats)).encode()
            out.write(HEADER.pack(b"E", len(payload), 0.0, 0, 0) + payload)
    except VideoError as exc:
        payload = str(exc).encode()
        out.write(HEADER.pack(b"X", len(payload), 0.0, 0, 0) + payload)
    out.flush()


def _read_exact(pipe: IO[bytes], size: int) -> bytes:
    data = pipe.read(size)
    return data if data is not None else b""


def decoded_frames(
    reader: VideoReader, sampling: SamplingSettings, size: tuple[int, int]
) -> Iterator[Frame]:
    """The parent's side: frames of ``reader``'s video, decoded and resized in a child.

    ``reader.stats`` is updated from the child's final report; a child that dies
    without one fails this video with its exit status.
    """
    command = [
        sys.executable, "-m", "vidcap.decode_worker", str(reader.path),
        "--height", str(size[0]), "--width", str(size[1]),
    ]  # fmt: skip
    if sampling.every_n is not None:
        command += ["--every-n", str(sampling.every_n)]
    else:
        command += ["--fps", repr(sampling.fps)]
    if sampling.max_frames is not None:
        command += ["--max-frames", str(sampling.max_frames)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, bufsize=1 << 20)
    assert proc.stdout is not None
    try:
        while True:
            header = _read_exact(proc.stdout, HEADER.size)
            if len(header) < HEADER.size:
                code = proc.wait()
                raise VideoError(
                    f"{reader.path}: the decoder stopped unexpectedly (exit status {code})"
                )
            kind, number, pts, height, width = HEADER.unpack(header)
            if kind == b"F":
                data = _read_exact(proc.stdout, height * width * 3)
                if len(data) < height * width * 3:
                    continue  # the loop's next read reports the dead decoder
                rgb = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
                yield Frame(index=number, pts_seconds=pts, rgb=rgb)
            elif kind == b"E":
                stats = json.loads(_read_exact(proc.stdout, number))
                for item in fields(VideoStats):
                    setattr(reader.stats, item.name, stats[item.name])
                return
            else:
                raise VideoError(_read_exact(proc.stdout, number).decode(errors="replace"))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidcap.decode_worker")
    parser.add_argument("path", type=Path)
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--every-n", type=int, default=None)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    import logging

    logging.basicConfig(level=logging.WARNING, format="vidcap: %(levelname)s: %(message)s")
    sampling = SamplingSettings(fps=args.fps, every_n=args.every_n, max_frames=args.max_frames)
    try:
        stream_frames(args.path, sampling, (args.height, args.width), sys.stdout.buffer)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
