"""What a run is made of, as every stage sees it: its settings (``RunSettings``, whose
``key`` a resume record holds), its videos (``VideoJob``), what became of each
(``VideoResult``, as records and ``summary.json`` hold it) and the outputs across videos
that say when rows are durable (``RunWriter``: Parquet shards).

``vidcap.plan`` turns inputs into jobs; ``vidcap.commit`` turns captions into outputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vidcap import __version__
from vidcap.errors import UsageError
from vidcap.inputs import shown_source
from vidcap.outputs import SCENES_FORMAT, VIDEO_FORMATS, CaptionedFrame
from vidcap.scenes import Scene
from vidcap.settings import GenerationSettings, SamplingSettings

RUN_FORMATS = ("parquet",)  # formats written across videos (``vidcap.parquet``)
# The revision of what a video's outputs hold under given settings (``VideoResult.outputs``),
# raised by a fix that changes the frames, times or pictures some videos get (``__version__``
# is no help: it stays the same across such fixes). Not part of the settings key: a library
# is not captioned again for a fix most of its videos never needed, but a rerun says how many
# videos it keeps from an earlier revision (``plan``); records from before it have none (0).
OUTPUTS = 3


def split_formats(text: str) -> tuple[str, ...]:
    """``"jsonl, srt"`` (``--format``) → the names, each once (``jsonl,jsonl`` is one)."""
    return tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


@dataclass(frozen=True)
class RunSettings:
    """What a run writes and what its outputs depend on."""

    out_dir: Path
    formats: tuple[str, ...] = ("jsonl", "srt", "vtt")
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    model: str = ""
    quiet: bool = False
    # How frames crossed to a remote model when that changes captions: "jpeg" (lossy) for
    # ``--server --wire-format jpeg``; empty when the model saw the decoder's pixels (embedded,
    # Ray, or the lossless PNG wire), so those runs resume each other's outputs.
    lossy_wire: str = ""
    # The hub commit of ``model`` (``vidcap.model.hub_revision``), when known: not part of
    # the key (folders of earlier versions keep theirs), but recorded with every video, and
    # a video captioned with another commit of the model is redone.
    revision: str = ""
    # What the language model computes in (``model.precision_name``: ``float16``…), where
    # known: recorded with every video, not part of the key (a folder begun on a CPU in
    # float32 resumes on a GPU in float16), and a rerun says how many kept videos differ.
    precision: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.formats, str) or not all(isinstance(f, str) for f in self.formats):
            raise UsageError(f"formats must be a sequence of names, got {self.formats!r}")
        known = (*VIDEO_FORMATS, *RUN_FORMATS)
        unknown = [fmt for fmt in self.formats if fmt not in known]
        if unknown or not self.formats:
            raise UsageError(
                f"unknown --format {','.join(unknown) or repr(','.join(self.formats))}; "
                f"supported values are {', '.join(known)}"
            )
        for name, kind in (("sampling", SamplingSettings), ("generation", GenerationSettings)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")

    def key(self) -> str:
        """Identifies what the outputs depend on; a rerun with other settings redoes videos."""
        return hashlib.sha256(json.dumps(self.keyed(), sort_keys=True).encode()).hexdigest()[:16]

    def keyed(self) -> dict[str, Any]:
        """What ``key`` hashes: the settings the captions depend on (``summary.json`` lists
        them under the key, so a folder says what made its captions)."""
        data: dict[str, Any] = {
            "formats": sorted(set(self.formats)),
            "sampling": self.sampling.key_fields(),
            "generation": asdict(self.generation),
            "model": self.model,
        }
        if self.lossy_wire:  # absent otherwise: keys of earlier versions stay valid
            data["wire"] = self.lossy_wire
        return data

    def video_formats(self) -> tuple[str, ...]:
        """The per-video files each video gets: ``formats``' ones, and with ``--scenes``
        ``<name>.scenes.jsonl``."""
        formats = tuple(fmt for fmt in self.formats if fmt in VIDEO_FORMATS)
        return formats + (SCENES_FORMAT,) if self.sampling.scenes else formats


@dataclass(frozen=True)
class VideoJob:
    """One input video of a run: ``id`` is its index in the run, ``name`` its output base name."""

    id: int
    source: str
    name: str
    identity: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shown(self) -> str:
        """The source as outputs, records and messages name it (``inputs.shown_source``)."""
        return shown_source(self.source)


# VideoResult's fields that records and summary.json hold only when set.
OPTIONAL_FIELDS = (
    "revision", "precision", "reused", "scenes", "thumbs", "lost_frames", "damaged_frames",
    "kept_frames",
)  # fmt: skip


@dataclass
class VideoResult:
    video: str
    name: str
    status: str  # "done" or "failed"
    error: str | None = None
    frames: int = 0
    duration: float = 0.0
    seconds: float = 0.0
    resumed: bool = False
    key: str = ""
    model: str = ""
    version: str = __version__
    outputs: int = OUTPUTS  # (0 for a record without it: written before ``OUTPUTS``)
    # Only in runs that use them (else None, and absent from records and summary.json):
    revision: str | None = None  # the model's hub commit, where known
    precision: str | None = None  # what the model computed in (``RunSettings.precision``)
    reused: int | None = None  # --skip-similar: frames that reused a caption (no model call)
    scenes: int | None = None  # --scenes: scenes found
    thumbs: int | None = None  # thumbnails written (OUT/thumbs/<name>/)
    # Only for a video that lost frames (corrupt or truncated: its captions skip them):
    lost_frames: int | None = None
    # Only where some exist: the sampled frames whose picture may show decoding damage
    # (their JSONL rows say ``"damaged": true``).
    damaged_frames: list[int] | None = None
    # Only for a video an interrupted run had begun: the frames whose caption it had made,
    # taken from its journal (``vidcap.journal``) instead of the model.
    kept_frames: int | None = None

    def record(self) -> dict[str, Any]:
        """The result as records and summary.json hold it."""
        data = asdict(self)
        for name in OPTIONAL_FIELDS:
            if data[name] is None:
                del data[name]
        return data


class RunWriter(Protocol):
    """An output across videos (e.g. Parquet shards): durable only once it says so.

    ``add`` takes a finished video's frames and returns the ids of videos whose rows are
    now durable (possibly none yet); ``close`` makes the rest durable and returns their ids.
    A video's resume record is written only once it is durable everywhere. ``remove``
    takes out a failed video's earlier rows (of another file or other settings: its record
    no longer vouches for them), saying what went.
    """

    def add(
        self, job: VideoJob, frames: Sequence[CaptionedFrame], scenes: Sequence[Scene] = ()
    ) -> list[int]: ...

    def remove(self, job: VideoJob) -> list[str]: ...

    def close(self) -> list[int]: ...
