"""`pilotfishctl up --proxy-binary ENVOY`: the same control plane runs real Envoy as every
sidecar and the ingress gateway (the peer of bench/mesh_bookinfo.py); BookInfo's
productpage is served through the gateway and follows the routing applied afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from tests.support.proxies import ENVOY_BIN

from pilotfish.mesh.bookinfo.productpage import reviews_version_in_page
from pilotfish.mesh.ctl import request

ROOT = Path(__file__).resolve().parents[2]
BOOKINFO = ROOT / "examples" / "bookinfo"
CTL = str(Path(sys.executable).with_name("pilotfishctl"))

pytestmark = [
    pytest.mark.skipif(not ENVOY_BIN.exists(), reason="no Envoy (make envoy)"),
    pytest.mark.slow,
]


def ctl(state: Path, *args: str) -> str:
    out = subprocess.run(
        [CTL, "--state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
    )
    assert out.returncode == 0, f"pilotfishctl {args}: {out.stdout}{out.stderr}"
    return out.stdout


def page(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/productpage", timeout=15) as r:
        assert r.status == 200
        return str(r.read().decode())


def test_up_with_envoy_as_every_proxy_serves_productpage(tmp_path: Path) -> None:
    state = tmp_path / "state"
    try:
        out = ctl(state, "up", str(BOOKINFO), "--proxy-binary", str(ENVOY_BIN))
        url = next(ln.split(" ", 1)[1] for ln in out.splitlines() if ln.startswith("gateway:"))
        answer = request(state, {"cmd": "status"})
        assert answer["proxy_binary"] == str(ENVOY_BIN.absolute())
        for row in answer["rows"]:
            cmdline = Path(f"/proc/{row['proxy_pid']}/cmdline").read_bytes().split(b"\0")
            assert b"--base-id" in cmdline and str(ENVOY_BIN).encode() in cmdline[0], cmdline
        net = BOOKINFO / "networking"
        ctl(state, "apply", "-f", str(net / "destination-rule-all.yaml"))
        ctl(state, "apply", "-f", str(net / "virtual-service-all-v1.yaml"))
        for _ in range(5):
            text = page(url)
            assert "Book Details" in text and "Error fetching" not in text, text[:2000]
            assert reviews_version_in_page(text) == "v1"
    finally:
        subprocess.run(
            [CTL, "--state", str(state), "down"], check=False, capture_output=True, timeout=120
        )
