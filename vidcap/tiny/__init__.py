"""The tiny BLIP-2: a test and demo model for synthetic shapes, shipped in the package."""

from pathlib import Path

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"
