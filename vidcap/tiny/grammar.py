"""The small language the tiny model speaks: every caption it can produce.

A caption is ``"a <colour> <shape> on a <background> background"`` or, with two
shapes, ``"a <colour> <shape> and a <colour> <shape> on a <background> background"``.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
BACKGROUNDS: tuple[str, ...] = ("white", "black", "gray")

# Words used by prompts ("Question: is there a red circle in this picture? Answer: yes").
PROMPT_WORDS: tuple[str, ...] = (
    "question",
    "answer",
    "is",
    "there",
    "in",
    "this",
    "picture",
    "yes",
    "no",
    "?",
    ":",
)
STRUCTURE_WORDS: tuple[str, ...] = ("a", "and", "on", "background")

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "</s>", "<unk>", "<image>")


def vocabulary() -> list[str]:
    """Every token of the tiny tokenizer, specials first, in a fixed order."""
    words = [*STRUCTURE_WORDS, *SHAPES, *COLOURS, *BACKGROUNDS, *PROMPT_WORDS]
    seen: list[str] = list(SPECIAL_TOKENS)
    for word in words:
        if word not in seen:
            seen.append(word)
    return seen


def caption_for(objects: list[tuple[str, str]], background: str) -> str:
    """Caption for ``objects`` (colour, shape) pairs on ``background``."""
    parts = [f"a {colour} {shape}" for colour, shape in objects]
    return f"{' and '.join(parts)} on a {background} background"
