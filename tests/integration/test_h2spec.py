"""h2spec against pilotfish's HTTP/2 codec (served by a minimal asyncio server, until the
connection manager serves HTTP/2) and against Envoy (an h2c listener answering with a
direct_response): the codec passes every case Envoy passes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.support.h2_server import H2FixedServer
from tests.support.h2spec import H2SPEC_BIN, passed, run_h2spec
from tests.support.proxies import ENVOY_BIN, ProxyProcess, bootstrap, http_listener

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.slow,
    pytest.mark.skipif(
        not H2SPEC_BIN.exists() and not os.environ.get("CI"),
        reason="h2spec not built (make h2spec)",
    ),
    pytest.mark.skipif(not ENVOY_BIN.exists(), reason="needs the real Envoy in .venv-envoy"),
]


def envoy_h2_bootstrap() -> dict:
    listener = http_listener(
        "h2",
        [
            {
                "match": {"prefix": "/"},
                "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
            }
        ],
        # Envoy waits 1 s for the peer to close after its GOAWAY (delayed_close_timeout);
        # h2spec waits for that close in many cases: 0 s takes the run from ~55 s to ~10 s.
        hcm={"codec_type": "HTTP2", "delayed_close_timeout": "0s"},
    )
    return bootstrap([listener], [])


def test_codec_passes_every_h2spec_case_envoy_passes(tmp_path: Path) -> None:
    with H2FixedServer() as server:
        ours = run_h2spec(server.port)
    with ProxyProcess("envoy", envoy_h2_bootstrap(), tmp_path) as envoy:
        theirs = run_h2spec(envoy.port("h2"))
    assert len(ours) == len(theirs) > 140
    missing = sorted(passed(theirs) - passed(ours))
    assert missing == [], f"Envoy passes, pilotfish's codec fails: {missing}"
    # The numbers docs/http2.md records (145 cases in h2spec 2.2.1).
    print(f"h2spec: codec {len(passed(ours))}, Envoy {len(passed(theirs))} of {len(ours)}")
