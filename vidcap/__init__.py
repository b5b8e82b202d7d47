"""vidcap: caption video in bulk with BLIP-2, with true timestamps."""

__version__ = "0.1.0"
