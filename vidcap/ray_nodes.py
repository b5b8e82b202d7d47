"""What each Ray worker runs, said with its rows and checked by the driver (``vidcap.ray``).

A cluster's nodes are images built at different times: a node with another vidcap decodes
with other rules (other frames and times: ``jobs.OUTPUTS``), an actor of another vidcap or
model commit captions otherwise. The driver records one vidcap version, outputs revision,
model commit and precision per video; so every decode task says on its rows what decoded
them (``decoder_report``), every Captioner actor what captioned them (``captioner_report``),
and the driver takes a row only from a worker that runs what it records (``Reports``):
another stops the run in one line naming the node and both versions (``NodeMismatch``),
with nothing of that worker's committed. Not recorded per video instead: a video's frames
may be captioned by several actors, and a retried decode task may run on another node.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from functools import cache

from vidcap import __version__
from vidcap.errors import NodeMismatch
from vidcap.jobs import OUTPUTS

# A report's fields as the driver names them in its line, in order.
_SAID = {
    "vidcap": "vidcap {}",
    "outputs": "outputs revision {}",
    "revision": "model revision {}",
    "precision": "{}",
    "transformers": "transformers {}",
}


@cache
def _node() -> str:
    """This worker's node: the address it joined the cluster at (``ray start
    --node-ip-address``), and the machine's name."""
    import ray

    try:  # (Ray is pinned to 2.60: a worker's node, not the address a socket would take)
        address = ray._private.worker.global_worker.node_ip_address
    except Exception:  # noqa: BLE001 - not connected (a test calling the stage in-process)
        address = ray.util.get_node_ip_address()
    return f"{address} ({socket.gethostname()})"


def decoder_report() -> str:
    """What this decode task runs: its node, vidcap and outputs revision (a row's text)."""
    return json.dumps({"node": _node(), "vidcap": __version__, "outputs": OUTPUTS})


def captioner_report(revision: str | None, precision: str) -> str:
    """What this Captioner actor runs: the decoder's fields, and the model commit it
    loaded, its precision and transformers' version."""
    import transformers

    report = json.loads(decoder_report())
    report |= {"revision": revision or "", "precision": precision}
    return json.dumps(report | {"transformers": transformers.__version__})


class Reports:
    """The driver's check of the workers' reports on each batch of rows, before any row of
    it is delivered: ``revision`` and ``precision`` are what the run records (checked
    where it records one); transformers' version, which it does not record, must be the
    same in every actor."""

    def __init__(self, revision: str, precision: str) -> None:
        self.expected = {"vidcap": __version__, "outputs": OUTPUTS}
        self.expected |= {"revision": revision, "precision": precision}
        self.seen: set[str] = set()
        self.transformers: str | None = None

    def check(self, stage: str, reports: Iterable[object] | None) -> None:
        """``reports``: a batch's column of ``stage``'s reports (``decoder``, ``captioner``)."""
        for report in set(reports if reports is not None else [None]) - self.seen:
            self._check(stage, report)
            self.seen.add(report)  # type: ignore[arg-type]

    def _check(self, stage: str, report: object) -> None:
        if not isinstance(report, str) or not report:  # (a vidcap from before reports)
            raise NodeMismatch(
                f"a Ray {stage} runs an older vidcap than this driver's {__version__} "
                f"(outputs revision {OUTPUTS}): it does not say which; every node needs "
                "the same vidcap as the driver, so nothing it made was committed"
            )
        said = json.loads(report)
        expected = {k: v for k, v in self.expected.items() if k in said and v != ""}
        if "transformers" in said:
            self.transformers = self.transformers or said["transformers"]
            expected["transformers"] = self.transformers
        differs = [k for k in _SAID if k in expected and said[k] != expected[k]]
        if not differs:
            return
        theirs = ", ".join(_SAID[k].format(said[k]) for k in differs)
        ours = ", ".join(_SAID[k].format(expected[k]) for k in differs)
        whose = "the other actors" if differs == ["transformers"] else "this driver"
        raise NodeMismatch(
            f"the Ray node at {said.get('node', '?')} runs {theirs} in its {stage}; "
            f"{whose}: {ours}. Every node needs the same vidcap and model as the driver: "
            "nothing it made was committed (update its image, then rerun)"
        )
