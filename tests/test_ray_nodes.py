"""``vidcap caption --ray ADDRESS`` on clusters started with ``ray start`` whose nodes are
not like the driver (tests.support.ray_nodes: every node on this machine, under its own
environment)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ray_nodes import ray_nodes, without_ray
from vidcap import __version__
from vidcap.errors import NodeMismatch
from vidcap.jobs import OUTPUTS
from vidcap.ray_nodes import Reports

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_videos"


def older_vidcap(folder: Path) -> Path:
    """A copy of this vidcap whose ``__version__`` and ``OUTPUTS`` say it is an older one
    (an image built before this one): the folder to put on a node's ``PYTHONPATH``."""
    shutil.copytree(REPO / "vidcap", folder / "vidcap", ignore=shutil.ignore_patterns("tiny"))
    os.symlink(REPO / "vidcap" / "tiny", folder / "vidcap" / "tiny")  # (its checkpoint)
    init, jobs = folder / "vidcap" / "__init__.py", folder / "vidcap" / "jobs.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', '"0.0.9"'))
    jobs.write_text(jobs.read_text().replace(f"OUTPUTS = {OUTPUTS}", f"OUTPUTS = {OUTPUTS - 1}"))
    return folder


def caption_on(
    address: str, out: Path, home: Path, ray_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``vidcap caption`` (this checkout's) joining ``address``, with Ray's variables
    ``ray_env`` alone (``without_ray``); run from ``out``'s parent, not from the checkout:
    Ray puts the driver's working folder on its workers' path."""
    env = {**without_ray(os.environ), "HOME": str(home), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO), **(ray_env or {})}  # fmt: skip
    clips = [str(SAMPLES / "shapes.mp4"), str(SAMPLES / "subject.mp4")]
    command = [sys.executable, "-m", "vidcap", "caption", *clips, "--out", str(out)]
    command += ["--model", "tiny", "--fps", "1", "--max-frames", "4", "--ray", address]
    return subprocess.run(
        command, env=env, cwd=out.parent, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_a_node_that_runs_another_vidcap_stops_the_run_committing_nothing_of_it(
    tmp_path: Path,
) -> None:
    """Regression: a node whose image held an older vidcap (another outputs revision)
    decoded or captioned with its own rules, and the driver committed the results as its
    own version's: summary.json said vidcap 0.1.0, outputs revision 3. Now the driver
    refuses that worker's rows in one line naming the node and both versions, exit 1.
    Head and node have one CPU each: the Captioner actor takes one, the decode tasks the
    other, so every row passes the older node, whichever stage it runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    home = tmp_path / "home"
    with ray_nodes(home, env) as cluster:
        cluster.add(1, {"PYTHONPATH": str(older_vidcap(tmp_path / "older"))})
        run = caption_on(cluster.address, tmp_path / "out", home)
    assert run.returncode == 1, run.stderr[-3000:]
    [said] = [line for line in run.stderr.splitlines() if line.startswith("vidcap:")]
    assert said.startswith("vidcap: error: the Ray node at "), said
    older = f"runs vidcap 0.0.9, outputs revision {OUTPUTS - 1} in its "
    ours = f"this driver: vidcap {__version__}, outputs revision {OUTPUTS}."
    assert older in said and ours in said and "nothing it made was committed" in said
    assert not list((tmp_path / "out").glob("*.jsonl"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["run"]["done"] == 0


def test_a_worker_report_that_differs_from_the_runs_record_is_refused() -> None:
    """The driver's check of the reports (a two-node run above): the model's precision and
    commit against what the run records, transformers against the first actor, a worker
    that says nothing (a vidcap from before the reports) refused too."""

    def report(**fields: object) -> str:
        said = {"node": "10.0.0.7 (gpu-7)", "vidcap": __version__, "outputs": OUTPUTS}
        return json.dumps(said | fields)

    reports = Reports(revision="abc", precision="float16")
    same = report(revision="abc", precision="float16", transformers="5.0.0")
    reports.check("Captioner actor", [same, same])
    reports.check("decode task", [report()])
    cases = [
        (report(revision="abc", precision="float32", transformers="5.0.0"),
         "runs float32 in its Captioner actor; this driver: float16."),
        (report(revision="def", precision="float16", transformers="5.0.0"),
         "runs model revision def in its Captioner actor; this driver: model revision abc."),
        (report(revision="abc", precision="float16", transformers="5.1.0"),
         "runs transformers 5.1.0 in its Captioner actor; the other actors: transformers 5.0.0"),
        ("", "a Ray Captioner actor runs an older vidcap than this driver's"),
        (None, "a Ray Captioner actor runs an older vidcap than this driver's"),
    ]  # fmt: skip
    for bad, message in cases:
        with pytest.raises(NodeMismatch, match=message.replace(".", r"\.")):
            reports.check("Captioner actor", [same, bad])
    # (where the run records no commit, a local model's: none to compare)
    Reports(revision="", precision="float32").check("Captioner actor", [report(revision="x")])


@pytest.mark.slow
def test_joining_a_cluster_that_wants_a_token_says_so(tmp_path: Path) -> None:
    """Regression: a driver without the token of a cluster with Ray's token authentication
    (``ray start --head`` found ``~/.ray/auth_token``) printed Ray's ``InvalidAuthToken``
    lines for 20 s, then "cannot join the Ray cluster at 127.0.0.1:PORT: Failed to connect
    to Ray cluster at <the machine's address>:PORT", naming neither the cause nor the cure;
    with ``RAY_AUTH_MODE=token`` and no token, a traceback. Each is one line now, and what
    it says to do joins."""
    import secrets

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    token = secrets.token_hex(32)
    (home / ".ray" / "auth_token").write_text(token)
    (home / ".ray" / "auth_token").chmod(0o600)
    driver_home = tmp_path / "driver"  # (no token there)
    driver_home.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with ray_nodes(home, env, cpus=2) as cluster:
        cases = [
            ({}, 2, "it wants a token (Ray's token authentication): set RAY_AUTH_MODE=token"),
            ({"RAY_AUTH_MODE": "token"}, 2, "RAY_AUTH_MODE=token but no token found"),
            ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}, 2,
             "it refused this driver's token: give the cluster's, RAY_AUTH_TOKEN=TOKEN"),
            ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}, 0, ""),
        ]  # fmt: skip
        for number, (extra, code, message) in enumerate(cases):
            run = caption_on(cluster.address, tmp_path / f"out{number}", driver_home, extra)
            said = [line for line in run.stderr.splitlines() if line.startswith("vidcap:")]
            assert run.returncode == code, (extra, run.stderr[-3000:])
            assert "Traceback" not in run.stderr, run.stderr[-3000:]
            if code:
                joining = f"vidcap: error: cannot join the Ray cluster at {cluster.address}: "
                assert len(said) == 1 and said[0].startswith(joining), said
                assert message in said[0], said
    assert (tmp_path / "out3" / "shapes.jsonl").exists()
