"""TorchServe's keys across a renewal and a restart right after traffic (an attack round's
finding): the clients' key outlives both (the gate reads TorchServe's renewed one), and
``NEW_KEYS=1`` makes new keys. Three starts of a real TorchServe: a file of its own, so
that ``make test`` runs it beside the other slow files."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from tests.support.servers import make_frames
from tests.support.torchserve import TorchServeInstance, http, run_script
from vidcap.wire import encode_image

PNG = "image/png"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three starts of a real TorchServe
def test_torchserve_restart_right_after_traffic_keeps_the_key() -> None:
    image = encode_image(make_frames(1, (64, 64))[0], "png")
    with tempfile.TemporaryDirectory(prefix="vidcap-restart-") as root:
        server = TorchServeInstance.launch(Path(root), {"VIDCAP_MODEL": "tiny", "NUM_GPUS": "0"})
        try:
            config = (server.run_dir / "config.properties").read_text()
            assert "token_expiration_min=5256000" in config  # ten years
            key = server.key("inference")
            assert key and len(key) >= 32
            answers = [server.predict(image, PNG, {"Connection": "close"}) for _ in range(20)]
            assert {a.status for a in answers} == {200}, answers[0]
            # TorchServe's token API gives the gate a new key (what the gate does when
            # TorchServe's own key expires): the gate reads it, clients keep theirs.
            renewed = http(
                "POST",
                f"{server.management_url}/token?type=inference",
                b"",
                {"Authorization": f"Bearer {server.key('API')}"},
            )
            assert renewed.status == 200, renewed
            assert server.predict(image, PNG).status == 200
            stopped = server.stop()
            assert stopped.returncode == 0, stopped.stdout
            assert (server.run_dir / "key_file.json").is_file()
            assert not (server.run_dir / "backend" / "key_file.json").exists()
            started = time.monotonic()
            again = run_script("start.sh", server.env, timeout=400)
            assert again.returncode == 0, again.stdout  # no "port ... not free" (TIME_WAIT)
            print(f"\nrestarted right after traffic in {time.monotonic() - started:.1f} s")
            assert server.key("inference") == key
            assert server.predict(image, PNG).status == 200
            server.stop()
            fresh = run_script("start.sh", {**server.env, "NEW_KEYS": "1"}, timeout=400)
            assert fresh.returncode == 0, fresh.stdout
            assert server.key("inference") != key
            old = server.predict(image, PNG, {"Authorization": f"Bearer {key}"})
            assert old.status == 400 and "Token Authorization failed" in str(old.body)
            assert server.predict(image, PNG).status == 200
        finally:
            server.stop()
