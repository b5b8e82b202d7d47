"""``vidcap mask`` and ``vidcap clips``: argparse sub-commands, wired in by ``vidcap.cli``.

Each ``add_*_parser(subparsers)`` adds one sub-command and sets ``func`` to its handler;
a handler takes the parsed ``argparse.Namespace``, returns the exit code (0; 1 when some
of a folder's videos could not be cut: the others are), prints its result to stdout, and
raises ``UsageError``/``VidcapError`` for anything the user can fix.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from vidcap.backend import Backend
from vidcap.cli.args import (
    add_model_arguments,
    add_sampling_arguments,
    backend_from_args,
    generation_from_args,
    refuse_unused_flags,
    sampling_from_args,
)
from vidcap.cli.parser import check_out_file, check_out_folder, check_writable, path_arg
from vidcap.clips import (
    MANIFEST_NAME,
    ONE_VIDEO_ERRORS,
    check_report_video,
    export_clips,
    export_scene_clips,
    load_report,
    load_scenes,
    scene_file_name,
    scene_files,
    scene_pieces,
)
from vidcap.errors import UsageError
from vidcap.folder import (
    SOURCE_CHANGED,
    FolderVideo,
    open_folder,
    read_scene_file,
    recorded_duration,
    scenes_beside,
)
from vidcap.inputs import require_utf8_name
from vidcap.mask import (
    QUESTION_MAX_NEW_TOKENS,
    MaskSettings,
    ask_frames,
    load_captions,
    mask_answers,
    mask_captions,
    records_jsonl,
    reject_folder,
)
from vidcap.outputs import write_atomic
from vidcap.records import SUMMARY
from vidcap.settings import question_prompt
from vidcap.video import VIDEO_EXTENSIONS, VideoReader
from vidcap.wording import counted, flags_that

log = logging.getLogger(__name__)

MASK_EPILOG = """\
query mode:    vidcap mask out/talk.jsonl --query "red circle" --merge-gap 2 --out talk.mask.json
question mode: vidcap mask talk.mp4 --question "Is Vladimir Putin in this picture?" --out putin.json
               (frames whose answer starts with "yes" match; with --out, the per-frame
               answers are saved beside it as putin.answers.jsonl, a caption JSONL that
               `vidcap mask putin.answers.jsonl --regex --query '^\\s*yes\\b'` re-masks without the model)
"""


def add_mask_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "mask",
        help="find where a subject is on screen: per-frame mask and time segments",
        description="Match captions (--query) or ask each frame a question (--question); "
        "print the per-frame 0/1 mask and the time segments as JSON.",
        epilog=MASK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", type=path_arg, help="caption JSONL (--query) or video (--question)"
    )
    mode = parser.add_argument_group("what to find")
    mode.add_argument(
        "--query", action="append", default=[], metavar="TEXT",
        help="words or phrase to find in captions (case-insensitive, whole words); repeatable",
    )  # fmt: skip
    mode.add_argument("--regex", action="store_true", help="queries are regular expressions")
    mode.add_argument("--question", metavar="TEXT", help="ask this of every sampled frame")
    default = MaskSettings()
    shaping = parser.add_argument_group("segments")
    shaping.add_argument("--merge-gap", type=float, default=default.merge_gap, metavar="S",
                         help="close gaps shorter than S seconds (default %(default)g)")  # fmt: skip
    shaping.add_argument("--min-duration", type=float, default=default.min_duration, metavar="S",
                         help="drop segments shorter than S seconds (default %(default)g)")  # fmt: skip
    shaping.add_argument("--duration", type=float, default=default.duration, metavar="S",
                         help="the video's duration (default in question mode: the end of "
                         "its last decodable frame, as `vidcap caption` finds it; for a "
                         "caption JSONL in an output folder, the duration the folder records; "
                         "else the last frame time + median frame interval)")  # fmt: skip
    parser.add_argument(
        "--out", type=path_arg, metavar="FILE", help="write the JSON here, not stdout"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar (question mode)")
    _add_question_options(parser)
    parser.set_defaults(func=run_mask)
    return parser


def _add_question_options(parser: argparse.ArgumentParser) -> None:
    """Question mode samples and asks like ``vidcap caption`` does (embedded or --server);
    its options, with their defaults, are kept to refuse them in query mode (which reads
    captions already made: they would be ignored)."""
    before = list(parser._actions)
    add_sampling_arguments(parser)
    add_model_arguments(parser)
    parser.set_defaults(max_new_tokens=QUESTION_MAX_NEW_TOKENS)
    added = [action for action in parser._actions if action not in before]
    parser.set_defaults(
        question_options=tuple(
            (a.option_strings[-1], a.dest, _as_parsed(a)) for a in added if a.option_strings
        )
    )


def _as_parsed(action: argparse.Action) -> object:
    """An option's default as parsing gives it: argparse runs a string default through the
    option's ``type`` (``--model``'s makes a local folder's path absolute)."""
    if isinstance(action.default, str) and callable(action.type):
        return action.type(action.default)
    return action.default


CLIPS_EPILOG = """\
segments: vidcap clips talk.mp4 putin.json --out clips/
a scene:  vidcap clips talk.mp4 --scenes out/talk.scenes.jsonl --out clips/ --max-duration 10
a folder: vidcap clips --scenes out/ --out clips/ --min-duration 2 --max-duration 10
"""


def add_clips_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "clips",
        help="cut each segment (or scene) of a video into its own MP4",
        description="Cut the segments (a `vidcap mask` report or a JSON list of "
        '{"start", "end"}) out of VIDEO into DIR, with DIR/manifest.json. With --scenes, '
        "cut each scene of a <name>.scenes.jsonl (vidcap caption --scenes) instead, each "
        "clip beside a JSON file of its captions; given an output folder, every video in it "
        "(into DIR/<name>/).",
        epilog=CLIPS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("video", type=path_arg, nargs="?", help="the video (with --scenes: "
                        "default, the video each scene row names)")  # fmt: skip
    parser.add_argument("segments", type=path_arg, nargs="?", help="SEGMENTS.json")
    parser.add_argument("--out", type=path_arg, required=True, metavar="DIR")
    parser.add_argument(
        "--precise",
        action="store_true",
        help="frame-accurate re-encode (libx264) instead of keyframe-aligned stream copy",
    )
    scenes = parser.add_argument_group("clips per scene")
    scenes.add_argument("--scenes", type=path_arg, metavar="SCENES",
                        help="a <name>.scenes.jsonl, or an output folder of them")  # fmt: skip
    scenes.add_argument("--min-duration", type=float, metavar="S",
                        help="drop scenes (and pieces) shorter than S seconds")  # fmt: skip
    scenes.add_argument("--max-duration", type=float, metavar="S",
                        help="split longer scenes into pieces of S seconds from their start")  # fmt: skip
    parser.set_defaults(func=run_clips)
    return parser


# --- handlers ----------------------------------------------------------------------------


def run_mask(args: argparse.Namespace) -> int:
    settings = MaskSettings(
        regex=args.regex,
        merge_gap=args.merge_gap,
        min_duration=args.min_duration,
        duration=args.duration,
    )
    querying = bool(args.query)  # (a list: --query is repeatable; an empty one is said later)
    if querying and args.question is not None:
        raise UsageError("--query and --question cannot be used together: give one")
    if not querying and args.question is None:
        raise UsageError("give --query (to search a caption JSONL) or --question (to ask a video)")
    if not querying:  # (refused before the model loads)
        question_prompt(args.question)
    reject_folder(args.source)
    require_utf8_name(args.source)
    if not args.source.exists():  # (named on the command line: a usage error, as caption's)
        raise UsageError(f"{args.source}: no such file")
    if querying:
        _refuse_question_options(args)
    if args.out is not None:
        beside = [scenes_beside(args.source), args.source.parent / SUMMARY]  # (read too)
        reads = [args.source, *(beside if querying else [])]
        check_out_file(args.out, "--out", reads)
        if not querying:
            check_out_file(answers_path(args.out), "--out's answers file", reads)
        check_writable(args.out, "--out")  # (before the model's work, not after it)
    if querying:
        report = _query_mode(args, settings)
    else:
        report = _question_mode(args, settings)
    _emit(report, args.out)
    return 0


def _refuse_question_options(args: argparse.Namespace) -> None:
    """Query mode reads captions already made: sampling and model options would be ignored."""
    given = [
        flag for flag, dest, default in args.question_options if getattr(args, dest) != default
    ]
    if given:
        raise UsageError(
            f"{flags_that(given, 'applies', 'apply')} to --question only: --query reads the "
            "captions already made (sample or caption again with `vidcap caption`)"
        )


def _query_mode(args: argparse.Namespace, settings: MaskSettings) -> dict:
    if args.source.suffix.lower() in VIDEO_EXTENSIONS:
        raise UsageError(
            f"{args.source} is a video: --query searches a caption JSONL "
            "(run `vidcap caption` first), or ask the video with --question"
        )
    captions = load_captions(args.source)
    beside = scenes_beside(args.source)  # (captioned --scenes: a sample covers its shot's part)
    shots = [(span.start, span.end) for span in read_scene_file(beside)]
    extra: dict[str, object] = {"scenes": str(beside)} if shots else {}
    if settings.duration is None:  # (as `vidcap search` and the page take it)
        known = recorded_duration(args.source, captions.video)
        if known is not None and known >= captions.frames[-1].time:
            settings = replace(settings, duration=known)
            extra["duration_source"] = "recorded"
    return mask_captions(captions, args.query, settings, shots, extra or None)


def _question_mode(args: argparse.Namespace, settings: MaskSettings) -> dict:
    if args.source.suffix.lower() == ".jsonl":
        raise UsageError("--question asks a video, not a caption JSONL; use --query for captions")
    if args.regex:
        raise UsageError("--regex applies to --query only")
    if args.prompt is not None:
        raise UsageError("--prompt does not apply to --question: the question is the prompt")
    refuse_unused_flags(args, ())  # (--prebatch without --server: said, not ignored)
    sampling = sampling_from_args(args)
    generation = generation_from_args(args)
    with VideoReader(args.source):  # a missing or undecodable video fails before the model loads
        pass
    backend = build_backend(args)
    try:
        answers = ask_frames(
            args.source, backend, args.question, sampling, generation, quiet=args.quiet
        )
    finally:
        backend.close()
    if args.out is not None:  # kept first: whatever the report says, the answers are not lost
        path = answers_path(args.out)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, records_jsonl(answers))
        log.info("per-frame answers in %s", path)
    fps = None if sampling.every_n is not None or sampling.keyframes else sampling.fps
    extra = {"model": args.model, "fps": fps, "every_n": sampling.every_n,
             "keyframes": sampling.keyframes, "max_frames": sampling.max_frames,
             "server": getattr(args, "server", None)}  # fmt: skip
    if args.duration is None and answers.duration is not None:
        settings = replace(settings, duration=answers.duration)
        extra["duration_source"] = "decoded"
    return mask_answers(answers, args.question, settings, extra)


def build_backend(args: argparse.Namespace) -> Backend:
    """The model in this process, or the servers given with ``--server``."""
    return backend_from_args(args)


def answers_path(out: Path) -> Path:
    """``putin.json`` → ``putin.answers.jsonl`` beside it."""
    return out.with_name(f"{out.stem}.answers.jsonl")


def _emit(report: dict, out: Path | None) -> None:
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    segments = report["segments"]
    log.info("%d segment(s), %.1f%% of the video", len(segments), 100 * report["coverage"])
    if out is None:
        print(text, end="")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, text)
    print(out)


def run_clips(args: argparse.Namespace) -> int:
    check_out_folder(args.out, "--out")
    if args.scenes is not None:
        return _scene_clips(args)
    if args.min_duration is not None or args.max_duration is not None:
        raise UsageError("--min-duration and --max-duration apply to --scenes only")
    if args.video is None or args.segments is None:
        raise UsageError("give VIDEO and SEGMENTS.json, or --scenes SCENES")
    require_utf8_name(args.video)
    if not args.video.exists():  # (named on the command line: a usage error, as caption's)
        raise UsageError(f"{args.video}: no such file")
    if args.video.is_dir():
        raise UsageError(f"{args.video} is a folder; give one video file")
    segments, named = load_report(args.segments)
    check_report_video(args.segments, named, args.video)
    clips = export_clips(args.video, segments, args.out, precise=args.precise)
    for clip in clips:
        print(args.out / clip.path)
    print(args.out / MANIFEST_NAME)
    return 0


def _recorded(path: Path, recorded: dict[Path, dict[str, FolderVideo]]) -> FolderVideo | None:
    """The record of the video of scene file ``path`` in its output folder, None where the
    folder holds none (scene files alone). ``recorded``: each folder's videos by name,
    read once."""
    folder = path.parent
    if folder not in recorded:
        try:
            recorded[folder] = {v.name: v for v in open_folder(folder)}
        except UsageError:  # (scene files alone, not in an output folder)
            recorded[folder] = {}
    return recorded[folder].get(scene_file_name(path))


def _scene_video(rows: list[dict], known: FolderVideo | None) -> Path:
    """The video a scene file's rows name: as they name it (relative to where
    ``vidcap caption`` ran), else the file its folder's record found (an absolute path)."""
    named = Path(rows[0]["video"])
    if named.is_file() or known is None:
        return named
    return known.local_source() or named


def _changed_source(video: Path, known: FolderVideo | None) -> str | None:
    """``SOURCE_CHANGED`` when the record ``known`` of a scene file's video says ``video``
    is not the file captioned (``FolderVideo.source_changed``); None otherwise, or when
    there is no record of it."""
    if known is None or (changed := known.source_changed()) is None:
        return None
    return SOURCE_CHANGED if changed.resolve() == video.resolve() else None


def _scene_clips(args: argparse.Namespace) -> int:
    """``vidcap clips [VIDEO] --scenes SCENES``: a clip and its captions per scene."""
    if args.segments is not None:
        raise UsageError("give SEGMENTS.json or --scenes, not both")
    scene_pieces([], args.min_duration, args.max_duration)  # (bad options: before any file)
    files = scene_files(args.scenes)
    folder = args.scenes.is_dir()
    if args.video is not None and (len(files) > 1 or folder):
        raise UsageError(
            "--scenes FOLDER cuts every video its scene files name: give no VIDEO with it"
        )
    skipped = 0  # a folder's videos are cut on past one that cannot be
    recorded: dict[Path, dict[str, FolderVideo]] = {}
    for path in files:
        try:
            rows = load_scenes(path)
        except UsageError as exc:
            if not folder:
                raise
            print(f"vidcap: no clips: {exc}", file=sys.stderr)
            skipped += 1
            continue
        # (the folder's record of the video: only where the rows name it, not VIDEO)
        known = _recorded(path, recorded) if args.video is None else None
        video = args.video or _scene_video(rows, known)
        if not video.is_file():
            if not folder:
                raise UsageError(
                    f"{path}: its video {video} is not a file here; give the video: "
                    f"vidcap clips VIDEO --scenes {path} --out {args.out}"
                )
            print(f"vidcap: {path}: no clips: its video {video} is not a file here",
                  file=sys.stderr)  # fmt: skip
            skipped += 1
            continue
        if changed := _changed_source(video, known):
            print(f"vidcap: {path}: warning: {video} {changed}: its clips are cut at the "
                  "scenes' times, which may not match it", file=sys.stderr)  # fmt: skip
        named = Path(rows[0]["video"]).name
        if args.video is not None and args.video.name != named:
            print(f"vidcap: {path}: warning: its scenes are of {named}, not "
                  f"{args.video.name}: cut from {args.video} as asked", file=sys.stderr)  # fmt: skip
        out = args.out / scene_file_name(path) if folder else args.out
        try:
            clips = export_scene_clips(
                video, rows, out, args.precise, args.min_duration, args.max_duration
            )
        except (*ONE_VIDEO_ERRORS, UsageError) as exc:
            if not folder:
                raise
            print(f"vidcap: {path}: no clips: {exc}", file=sys.stderr)
            skipped += 1
            continue
        for clip in clips:
            print(out / clip.path)
        print(out / MANIFEST_NAME)
    if skipped:
        print(f"vidcap: {counted(skipped, 'video')} not cut (see above)", file=sys.stderr)
        return 1
    return 0
