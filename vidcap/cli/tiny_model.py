"""``vidcap tiny-model DIR``: write the bundled tiny BLIP-2 checkpoint (or a fresh random one,
``--untrained``) to a folder, whole or not at all.

The checkpoint is built in a staging folder (beside a new DIR, inside an empty one: its parent
may not be writable, or it a mount point) and renamed into place at the end,
so a full disk, a quota or a Ctrl-C leaves no half-written checkpoint that ``--model DIR``
would load (or fail to load) later, and a rerun is not refused for a folder left behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from vidcap.cli.parser import path_arg
from vidcap.errors import UsageError, VidcapError

SEED_LIMIT = 2**63  # torch.manual_seed takes a 64-bit integer
_DEFAULT_SEED = 0


def add_tiny_model_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "tiny-model", help="write the bundled tiny BLIP-2 checkpoint to a folder"
    )
    parser.add_argument(
        "dir",
        type=path_arg,
        metavar="DIR",
        help="a new or empty folder to write it to (--model DIR)",
    )
    parser.add_argument(
        "--untrained", action="store_true", help="build fresh random weights instead"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="the random weights' seed (--untrained; default 0)"
    )
    parser.set_defaults(func=run_tiny_model)
    return parser


def run_tiny_model(args: argparse.Namespace) -> int:
    out: Path = args.dir
    seed = _seed(args.seed, args.untrained)
    target = _target(out)
    inside = target.is_dir()  # an empty folder: its parent may not be ours, or it a mount
    staging = (
        target / f".part-{os.getpid()}"
        if inside
        else target.with_name(f".{target.name}.part-{os.getpid()}")
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        if args.untrained:
            from vidcap.tiny.build import build_tiny

            build_tiny(staging, seed=seed)
        else:
            from vidcap.tiny import CHECKPOINT_DIR

            staging.mkdir()
            for path in sorted(CHECKPOINT_DIR.iterdir()):  # (flat: one folder of files)
                shutil.copy2(path, staging / path.name)
        _readable(staging)
        if inside:  # (each file renamed into the folder, which stays: a shell may be in it)
            for path in sorted(staging.iterdir()):
                path.rename(target / path.name)
            staging.rmdir()
        else:
            staging.rename(target)
    except OSError as exc:
        raise VidcapError(f"cannot write the checkpoint to {out}: {_why(exc)}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"tiny BLIP-2 checkpoint written to {out} (load it with --model {out})")
    return 0


def _seed(seed: int | None, untrained: bool) -> int:
    if seed is None:
        return _DEFAULT_SEED
    if not untrained:
        raise UsageError("--seed applies to --untrained only (the bundled weights are fixed)")
    if not 0 <= seed < SEED_LIMIT:
        raise UsageError(f"--seed must be a whole number from 0 to {SEED_LIMIT - 1}, got {seed}")
    return seed


def _target(out: Path) -> Path:
    """Where the checkpoint goes: ``out`` (new, or an empty folder: through a link to one,
    the folder linked to); a usage error for anything else standing there."""
    if out.is_symlink() and not out.exists():
        raise UsageError(f"{out} is a link to nothing; give a new or empty folder")
    for part in out.parents:
        if part.exists() and not part.is_dir():
            raise UsageError(f"{out}: {part} is a file, not a folder; choose another")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; give a new or empty folder")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty")
    return out.resolve() if out.exists() else out


def _readable(folder: Path) -> None:
    """The checkpoint's files readable as any file this user writes (a writer of safetensors
    makes its file 0600, as a temporary file): by the umask."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _why(exc: OSError) -> str:
    """An OSError's reason, not its path (the line names the folder; the path is the
    staging folder's, or the package's)."""
    return exc.strerror or str(exc)
