"""`make demo` (examples/bookinfo_demo.py) runs to the end: the mesh comes up, Istio's three
routing steps and STRICT mTLS give the expected tables, the certificates and handshakes are
shown, and `--once` tears it down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not (ROOT / "examples/bookinfo/networking/destination-rule-all-mtls.yaml").exists(),
    reason="examples missing",
)


def test_demo_runs_every_step(tmp_path: Path) -> None:
    demo = [sys.executable, str(ROOT / "examples/bookinfo_demo.py")]
    out = subprocess.run(
        [*demo, "--once", "-n", "4", "--state", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "== step 4: STRICT mTLS between all sidecars" in text
    # After step 3 and under STRICT mTLS: everyone on v1, jason on v2.
    tables = re.findall(r"anyone\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", text)
    assert tables[-2:] == [("4", "0", "0", "0")] * 2, text
    assert re.findall(r"jason\s+(\d+)\s+(\d+)", text)[-2:] == [("0", "4")] * 2, text
    assert re.search(r"default\s+Cert Chain\s+ACTIVE\s+true", text), text
    handshakes = re.search(r"TLS handshakes to reviews: (\d+)", text)
    assert handshakes is not None and int(handshakes.group(1)) > 0, text
    assert text.rstrip().endswith("the mesh is down")
