"""``vidcap caption``: flags → settings, then the engine (or ``--ray``) runs them."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from vidcap.cli import EXIT_FAILED, EXIT_OK, output_to_nowhere
from vidcap.cli.parser import nonempty
from vidcap.wording import counted

if TYPE_CHECKING:
    from vidcap.jobs import RunSettings, VideoResult
    from vidcap.ray import RaySettings
    from vidcap.settings import EngineSettings, ModelSettings


def add_caption_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from vidcap.cli.args import (
        add_engine_arguments,
        add_model_arguments,
        add_output_arguments,
        add_parquet_arguments,
        add_ray_arguments,
        add_sampling_arguments,
        add_scene_arguments,
        column_name,
    )
    from vidcap.inputs import PATH_COLUMN

    parser = subparsers.add_parser(
        "caption", help="caption videos: JSONL, SRT, WebVTT per video; summary.json of the folder"
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        type=nonempty,
        help="video files, folders (searched recursively), list files (.txt, or .csv/.tsv/"
        ".parquet with a 'path' column; other columns are carried into the outputs) or fsspec URLs",
    )
    parser.add_argument(
        "--path-column",
        metavar="NAME",
        type=column_name,
        default=PATH_COLUMN,
        help=f"the column of a .csv/.tsv/.parquet list file that holds the videos' paths or URLs "
        f"(default: {PATH_COLUMN}; give url for a video2dataset list)",
    )
    add_output_arguments(parser)
    add_sampling_arguments(parser)
    add_scene_arguments(parser)
    add_model_arguments(parser)
    add_engine_arguments(parser)
    add_parquet_arguments(parser)
    add_ray_arguments(parser)
    parser.set_defaults(func=run_caption, resumes=True, output_is_product=False)
    return parser


def run_caption(args: argparse.Namespace) -> int:
    from vidcap.remote_out import output_folder

    with output_folder(args.out) as out:  # a URL: a local staging folder, uploaded
        code, said = _caption(args, out)
    if said is not None:  # (once uploaded: a last upload that failed is the run's error)
        try:
            print(said, file=sys.stderr)
        except BrokenPipeError:  # (``2>&1 | head``: the run's status is still its exit code)
            output_to_nowhere((2,))
    return code


def _caption(args: argparse.Namespace, out: Path) -> tuple[int, str | None]:
    """Caption into ``out``: the exit status, and the run's last line (None: quiet)."""
    from vidcap.cli.args import (
        engine_from_args,
        model_settings_from_args,
        ray_settings_from_args,
        refuse_unused_flags,
        run_settings_from_args,
    )
    from vidcap.commit import check_out_dir
    from vidcap.inputs import shown_source
    from vidcap.out_lock import gone_if_unused
    from vidcap.records import is_damaged

    settings = run_settings_from_args(args, out)
    refuse_unused_flags(args, settings.formats)
    model = model_settings_from_args(args)
    engine = engine_from_args(args)
    ray_settings = ray_settings_from_args(args)
    with gone_if_unused(out):  # (a run that could not start: the folder it made goes)
        check_out_dir(out)
        results = _results(args, out, settings, model, engine, ray_settings)
    failed = [r for r in results if r.status == "failed"]
    damaged = [r for r in results if is_damaged(r.lost_frames, r.damaged_frames)]
    done_frames = sum(r.frames for r in results)
    said = None
    if not args.quiet:
        notes = [f"{len(failed)} failed"] if failed else []
        if damaged:  # captioned as far as they decode
            notes.append(f"{len(damaged)} damaged, captioned as far as they decode")
        if kept := sum(r.kept_frames or 0 for r in results if not r.resumed):
            notes.append(f"{counted(kept, 'caption')} kept from an interrupted run")
        if earlier := sum(r.resumed for r in results):
            notes.append(f"{earlier} done by an earlier run")  # (a rerun with nothing to do
            # said what the first run said)
        shown = shown_source(args.out)  # (an --out URL's password is never printed)
        summary = f"{shown.rstrip('/')}/summary.json"
        said = (
            f"vidcap: {len(results) - len(failed)} of {len(results)} videos done, "
            f"{counted(done_frames, 'frame')}; outputs in {shown}"
            + (f"; {', '.join(notes)} (see {summary})" if notes else "")
        )
    return (EXIT_FAILED if failed else EXIT_OK), said


def _results(
    args: argparse.Namespace,
    out: Path,
    settings: RunSettings,
    model: ModelSettings,
    engine: EngineSettings,
    ray_settings: RaySettings | None,
) -> list[VideoResult]:
    """The run itself, on Ray or embedded: every input's result."""
    from vidcap.cli.args import backend_from_args
    from vidcap.engine import run
    from vidcap.inputs import expand_inputs
    from vidcap.model import model_input_size
    from vidcap.parquet import run_writers_for

    videos = expand_inputs(args.inputs, args.path_column, out)  # files, folders, lists, URLs
    metadata = [v.metadata for v in videos]
    if args.server:  # the served model names the outputs (summary.json, the resume key)
        from vidcap.cli.remote import lossy_wire, served_model_name

        served, revision, precision = served_model_name(args)
        settings = replace(
            settings,
            model=served,
            revision=revision,
            precision=precision,
            lossy_wire=lossy_wire(args),
        )
    else:  # every replica (each Ray actor too) loads this one commit of a hub model
        from vidcap.model import pinned, precision_of

        model = pinned(model)
        settings = replace(settings, revision=model.revision or "")
        if ray_settings is None:  # (Ray picks each actor's device: vidcap.ray says)
            settings = replace(settings, precision=precision_of(model))
    run_writers = run_writers_for(settings, metadata, args.shard_rows)
    if ray_settings is not None:  # the same stages as a Ray Data pipeline (vidcap/ray.py)
        from vidcap.ray import run as run_on_ray

        return run_on_ray(videos, settings, model, ray_settings, run_writers)
    return run(
        [v.source for v in videos],
        settings,
        lambda: backend_from_args(args, model),
        engine,
        metadata=metadata,
        run_writers=run_writers,
        # Embedded: the input size is known before the model loads, so decoding starts at once.
        input_size=None if args.server else model_input_size(args.model),
    )
