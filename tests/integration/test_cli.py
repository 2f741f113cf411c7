"""The `pilotfish` command line, as a process: Envoy's flags, validate mode, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.istio_data import BOOTSTRAP_GOLDENS

PILOTFISH = str(Path(sys.executable).with_name("pilotfish"))
GOLDEN_DIR = BOOTSTRAP_GOLDENS

GOOD = """
static_resources:
  clusters:
  - name: a
    load_assignment:
      cluster_name: a
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}
"""


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PILOTFISH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0
    assert "version:" in r.stdout and "1.40.0" in r.stdout


def test_unknown_flag_is_an_error_like_envoy() -> None:
    r = run("--no-such-flag", "-c", "x.yaml")
    assert r.returncode == 1
    assert "PARSE ERROR" in r.stderr and "--no-such-flag" in r.stderr


def test_every_flag_pilot_agent_passes_is_accepted(tmp_path: Path) -> None:
    config = tmp_path / "envoy-rev.json"
    config.write_text('{"static_resources": {}}')
    r = run(
        "-c",
        str(config),
        "--drain-time-s",
        "45",
        "--drain-strategy",
        "immediate",
        "--parent-shutdown-time-s",
        "60",
        "--local-address-ip-version",
        "v4",
        "--file-flush-interval-msec",
        "1000",
        "--file-flush-min-size-kb",
        "64",
        "--disable-hot-restart",
        "--allow-unknown-static-fields",
        "-l",
        "warning",
        "--component-log-level",
        "misc:error",
        "--log-format",
        "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t",
        "--concurrency",
        "2",
        "--service-cluster",
        "c",
        "--service-node",
        "n",
        "--service-zone",
        "z",
        "--base-id",
        "3",
        "--restart-epoch",
        "0",
        "--skip-deprecated-logs",
        "--enable-core-dump",
        "--mode",
        "validate",
    )
    assert r.returncode == 0, r.stderr
    assert f"configuration '{config}' OK" in r.stdout


def test_istio_golden_bootstraps_validate() -> None:
    goldens = sorted(GOLDEN_DIR.glob("*_golden.json"))
    assert len(goldens) >= 20
    for golden in goldens:
        r = run("--mode", "validate", "-c", str(golden))
        assert r.returncode == 0, (golden.name, r.stderr)
        assert "OK" in r.stdout


def test_validate_reports_the_offending_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(GOOD.replace("port_value: 1", "port_value: 70000"))
    r = run("--mode", "validate", "-c", str(config))
    assert r.returncode == 1
    assert (
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0]"
        ".endpoint.address.socket_address.port_value" in r.stderr
    )


def test_config_yaml_alone_and_merged(tmp_path: Path) -> None:
    r = run("--mode", "validate", "--config-yaml", GOOD)
    assert r.returncode == 0, r.stderr
    config = tmp_path / "b.yaml"
    config.write_text(GOOD)
    # The override adds a second cluster with an error: the merge is checked as a whole.
    r = run(
        "--mode",
        "validate",
        "-c",
        str(config),
        "--config-yaml",
        "static_resources: {clusters: [{name: b, connect_timeout: -1s}]}",
    )
    assert r.returncode == 1
    assert "static_resources.clusters[1].connect_timeout" in r.stderr


def test_serve_with_bad_bootstrap_exits_before_binding(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("static_resources: {listeners: [{name: x}]}")
    r = run("-c", str(config))
    assert r.returncode == 1
    assert "static_resources.listeners[0].address" in r.stderr


def test_bad_log_level_and_component() -> None:
    assert run("-l", "loud", "--mode", "validate", "--config-yaml", GOOD).returncode == 1
    r = run("--component-log-level", "nope:debug", "--mode", "validate", "--config-yaml", GOOD)
    assert r.returncode == 1 and "invalid component" in r.stderr


def test_missing_config() -> None:
    r = run("--mode", "validate")
    assert r.returncode == 1
    assert "--config-path" in r.stderr
