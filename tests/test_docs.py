"""README.md and docs/*.md say only what is true of this checkout.

- the README stays an entrance: at most 200 lines;
- every relative link (and ``#anchor``) points to a file (and heading) that exists;
- every ``vidcap …`` command in a fenced ``sh``/``bash`` block parses with the real argument
  parser (``vidcap.cli.build_parser()``), and every ``--flag`` of an inline ``vidcap …`` span
  belongs to its subcommand; every ``make TARGET`` is a target of the Makefile;
- fenced ``python`` blocks compile, and the names they import from ``vidcap`` exist;
- the code-block convention (stated in the README and at the top of docs/cli.md): a shell
  block with a ``vidcap`` command starts with ``# offline`` (runs as written from the
  repository root, no GPU, no network: run here, marked ``slow``) or ``# example`` (needs a
  GPU, a server, a cluster, network or your own files: only checked).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200
SHELL_LANGS = {"sh", "bash", "shell", "console"}
OFFLINE, EXAMPLE = "# offline", "# example"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def first_line(self) -> str:
        lines = self.text.strip().splitlines()
        return lines[0].strip() if lines else ""


def fenced_blocks(path: Path) -> list[Block]:
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, lang, start = opening.group(1), opening.group(2).lower(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append(Block(path, start + 1, lang, "\n".join(body)))
        i += 1
    return blocks


def prose(path: Path) -> str:
    """The file without its fenced blocks (links and inline code live here)."""
    out, in_block, fence = [], False, ""
    for line in path.read_text(encoding="utf-8").splitlines():
        opening = re.match(r"^\s*(`{3,}|~{3,})", line)
        if not in_block and opening:
            in_block, fence = True, opening.group(1)
            out.append("")
        elif in_block and line.strip().startswith(fence):
            in_block = False
            out.append("")
        else:
            out.append("" if in_block else line)
    return "\n".join(out)


def all_blocks(langs: set[str]) -> list[Block]:
    return [b for p in DOC_FILES for b in fenced_blocks(p) if b.lang in langs]


# --- shell commands ---------------------------------------------------------------------


def logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    out, current = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
        else:
            out.append(current + line)
            current = ""
    if current:
        out.append(current)
    return out


def commands(line: str) -> list[list[str]]:
    """Simple commands of one shell line: split on ``&& || | ; ( )``, env assignments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError as exc:  # an unbalanced quote
        raise AssertionError(f"cannot split {line!r}: {exc}") from None
    out, current = [], []
    for token in [*tokens, ";"]:
        if token and set(token) <= set("&|;()<>"):
            while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", current[0]):
                current.pop(0)
            if current:
                out.append(current)
            current = []
        else:
            current.append(token)
    return out


@dataclass(frozen=True)
class Command:
    where: str
    argv: tuple[str, ...]


def shell_commands(program: str) -> list[Command]:
    found = []
    for block in all_blocks(SHELL_LANGS):
        for line in logical_lines(block.text):
            for argv in commands(line):
                if argv[0] == program:
                    found.append(Command(block.where, tuple(argv)))
    return found


def inline_commands(program: str) -> list[Command]:
    """``program …`` inline code spans in the prose of README.md and docs/."""
    found = []
    for path in DOC_FILES:
        for span in re.findall(r"`([^`\n]+)`", prose(path)):
            if span.startswith(program + " "):
                argv = tuple(re.split(r"\s+", span.strip()))
                found.append(Command(f"{path.relative_to(ROOT)}: `{span}`", argv))
    return found


@cache
def parser():
    from vidcap.cli import build_parser

    return build_parser()


def subparsers() -> dict:
    import argparse

    actions = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1, "vidcap's parser has one level of subcommands"
    return actions[0].choices


def options_of(p) -> set[str]:
    return set(p._option_string_actions)


def flags(argv: tuple[str, ...]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if re.match(r"^--?[A-Za-z]", a)]


def test_readme_is_an_entrance():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}); move the detail to docs/"
    )


def test_shell_blocks_with_vidcap_say_whether_they_run():
    unmarked = [
        b.where
        for b in all_blocks(SHELL_LANGS)
        if any(argv[0] == "vidcap" for line in logical_lines(b.text) for argv in commands(line))
        and not b.first_line.startswith((OFFLINE, EXAMPLE))
    ]
    assert not unmarked, (
        f"shell blocks with a vidcap command need '{OFFLINE}' or '{EXAMPLE}' first: {unmarked}"
    )


def test_the_docs_hold_vidcap_commands():
    assert len(shell_commands("vidcap")) >= 10
    assert len(inline_commands("vidcap")) >= 5


@pytest.mark.parametrize("command", shell_commands("vidcap"), ids=lambda c: c.where)
def test_vidcap_command_in_a_block_parses(command: Command):
    argv = list(command.argv[1:])
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser().parse_args(argv)
        except SystemExit as exc:
            if exc.code != 0:
                pytest.fail(
                    f"{command.where}: {shlex.join(command.argv)}\n{stderr.getvalue()}",
                    pytrace=False,
                )
    sub = subparsers()[argv[0]]
    unknown = [f for f in flags(command.argv[2:]) if f not in options_of(sub)]
    assert not unknown, f"{command.where}: not flags of 'vidcap {argv[0]}' as written: {unknown}"


@pytest.mark.parametrize("command", inline_commands("vidcap"), ids=lambda c: c.where)
def test_vidcap_command_inline_uses_real_flags(command: Command):
    word = command.argv[1]
    if word.startswith("-"):  # vidcap --version
        target = parser()
    elif re.fullmatch(r"[a-z][a-z-]*", word):
        assert word in subparsers(), f"{command.where}: no subcommand {word!r}"
        target = subparsers()[word]
    else:  # a placeholder (SUBCOMMAND) or prose (`vidcap caption · mask`)
        pytest.skip("no subcommand named")
    unknown = [f for f in flags(command.argv[1:]) if f not in options_of(target)]
    assert not unknown, f"{command.where}: not flags of 'vidcap {word}': {unknown}"


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.MULTILINE))


def test_make_targets_exist():
    targets = makefile_targets()
    named = [(c.where, c.argv[1]) for c in shell_commands("make") + inline_commands("make")]
    assert named, "the README names its make targets"
    missing = [(where, t) for where, t in named if t not in targets]
    assert not missing, f"no such Makefile target: {missing}"


# --- links ------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", prose(path))  # link syntax inside inline code is not a link
    return re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{path.relative_to(ROOT)}: broken links {broken}"


# --- python blocks ----------------------------------------------------------------------


@pytest.mark.parametrize("block", all_blocks({"python", "py"}), ids=lambda b: b.where)
def test_python_block_compiles_and_its_vidcap_names_exist(block: Block):
    tree = compile(block.text, block.where, "exec", flags=ast.PyCF_ONLY_AST)
    compile(tree, block.where, "exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vidcap":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{block.where}: no {node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "vidcap":
                    importlib.import_module(alias.name)


# --- running the offline blocks -----------------------------------------------------------


def offline_blocks() -> list[Block]:
    return [b for b in all_blocks(SHELL_LANGS) if b.first_line.startswith(OFFLINE)]


def test_some_blocks_run_offline():
    assert offline_blocks(), f"no block marked {OFFLINE!r}: nothing in the docs is run"


@pytest.mark.slow
@pytest.mark.parametrize("block", offline_blocks(), ids=lambda b: b.where)
def test_offline_block_runs(block: Block, tmp_path: Path):
    """Run as written, in a scratch folder that holds the repository's sample videos."""
    (tmp_path / "sample_videos").symlink_to(ROOT / "sample_videos")
    script = (
        "set -euo pipefail\n"
        'vidcap() { "$VIDCAP_PYTHON" -m vidcap "$@"; }\n'  # this checkout's vidcap
        f"{block.text}\n"
    )
    env = {
        **os.environ,
        "VIDCAP_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (
        f"{block.where} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
