"""Workloads as Kubernetes runs pods, in the loopback mesh: `apply` says created /
unchanged / configured and returns when what it applied serves (readiness probes through
the pod's status port, pilot-agent's /app-health/<name>/readyz), workingDir, and a workload
that cannot run fails alone with the reason in `status` (or is refused before anything
starts). One small mesh for the module: Python's http.server as the app, no BookInfo."""

from __future__ import annotations

import json
import stat
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_mesh_bookinfo import Mesh
from tests.support.waiting import wait_for

from pilotfish.mesh.ctl import synced

WEB = """
apiVersion: pilotfish.io/v1alpha1
kind: Workload
metadata: {name: NAME, labels: {app: NAME}}
spec:
  command: ["{python}", -m, http.server, "{port}", --bind, 127.0.0.1]
  workingDir: DIR
  env: {VERSION: "ENV"}
  readinessProbe:
    httpGet: {path: PATH}
    periodSeconds: 1
"""


def web(name: str, directory: Path, path: str = "/hello.txt", env: str = "1") -> str:
    return (
        WEB.replace("NAME", name)
        .replace("DIR", str(directory))
        .replace("PATH", path)
        .replace("ENV", env)
    )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("workloads")
    mesh = Mesh(root / "state")
    try:
        mesh.ctl("up")
        yield mesh
    finally:
        mesh.ctl("down", check=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    (site / "hello.txt").write_text("hello from the working directory\n")
    return site


def apply_text(mesh: Mesh, path: Path, text: str, *args: str, check: bool = True) -> Any:
    path.write_text(text)
    return mesh.ctl("apply", *args, "-f", str(path), check=check)


def row(mesh: Mesh, name: str) -> dict[str, Any]:
    return next(r for r in mesh.status() if r["name"] == name)


def get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_apply_says_created_unchanged_configured_and_waits_for_readiness(
    mesh: Mesh, site: Path, tmp_path: Path
) -> None:
    # The probe asks for hello.txt, which only the workingDir has: ready proves both.
    out = apply_text(mesh, tmp_path / "web.yaml", web("web", site)).stdout
    assert "workload/web created" in out, out
    r = row(mesh, "web")
    assert r["app"] == "Running" and r["app_ready"] is True and r["reason"] == ""
    assert synced(r), r["sync"]  # CDS, LDS, RDS ACKed (no Service here: no EDS)
    assert (
        "workload/web unchanged" in apply_text(mesh, tmp_path / "web.yaml", web("web", site)).stdout
    )
    out = apply_text(mesh, tmp_path / "web.yaml", web("web", site, env="2")).stdout
    assert "workload/web configured" in out, out
    assert row(mesh, "web")["app_ready"] is True


def test_probe_is_served_by_the_pods_status_port(mesh: Mesh, site: Path, tmp_path: Path) -> None:
    """As Istio rewrites it: GET /app-health/<name>/readyz on the status port runs the app's
    own probe; a failing probe keeps the workload unready and says why."""
    apply_text(mesh, tmp_path / "web.yaml", web("web", site))
    port = row(mesh, "web")["status_port"]
    assert get(f"http://127.0.0.1:{port}/app-health/web/readyz")[0] == 200
    assert get(f"http://127.0.0.1:{port}/app-health/other/readyz")[0] == 500
    apply_text(mesh, tmp_path / "bad.yaml", web("web-404", site, path="/missing"), "--no-wait")
    wait_for(lambda: "statuscode: 404" in row(mesh, "web-404")["reason"], "the probe's reason", 30)
    r = row(mesh, "web-404")
    assert r["app"] == "Running" and r["app_ready"] is False
    code, body = get(f"http://127.0.0.1:{r['status_port']}/app-health/web-404/readyz")
    assert code == 500 and "404" in body
    assert "Readiness probe failed" in mesh.ctl("status").stdout
    mesh.ctl("delete", "-f", str(tmp_path / "bad.yaml"))


EXEC_PROBE = """
apiVersion: pilotfish.io/v1alpha1
kind: Workload
metadata: {name: gated}
spec:
  command: ["{python}", -m, http.server, "{port}", --bind, 127.0.0.1]
  readinessProbe:
    exec: {command: [test, -f, FLAG]}
    periodSeconds: 1
"""


def test_exec_probe_gates_readiness(mesh: Mesh, tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    apply_text(mesh, tmp_path / "gated.yaml", EXEC_PROBE.replace("FLAG", str(flag)), "--no-wait")
    wait_for(
        lambda: "command exited 1" in row(mesh, "gated")["reason"], "the exec probe failing", 30
    )
    assert row(mesh, "gated")["app_ready"] is False
    flag.touch()
    wait_for(lambda: row(mesh, "gated")["app_ready"] is True, "gated ready", timeout=30)
    mesh.ctl("delete", "-f", str(tmp_path / "gated.yaml"))


BROKEN = """
apiVersion: pilotfish.io/v1alpha1
kind: Workload
metadata: {name: fine}
spec:
  command: ["{python}", -m, http.server, "{port}", --bind, 127.0.0.1]
---
apiVersion: pilotfish.io/v1alpha1
kind: Workload
metadata: {name: broken}
spec:
  command: COMMAND
"""


def broken(*command: str) -> str:
    return BROKEN.replace("COMMAND", json.dumps(list(command)))


def test_a_missing_program_refuses_the_file_before_anything_starts(
    mesh: Mesh, tmp_path: Path
) -> None:
    out = apply_text(mesh, tmp_path / "b.yaml", broken("/nonexistent/app"), check=False)
    assert out.returncode == 1
    assert "Workload #1: spec.command: '/nonexistent/app': executable file not found" in out.stderr
    names = {r["name"] for r in mesh.status()}
    assert not {"fine", "broken"} & names, names


def test_a_crashing_app_fails_alone_and_status_says_why(mesh: Mesh, tmp_path: Path) -> None:
    crash = broken(sys.executable, "-c", "import sys; sys.exit('boom: no config')")
    out = apply_text(mesh, tmp_path / "c.yaml", crash)
    assert "workload/fine created" in out.stdout and "workload/broken created" in out.stdout
    assert row(mesh, "fine")["app_ready"] is True  # the apply waited for it, not for broken
    wait_for(lambda: row(mesh, "broken")["app"] == "Exited(1)", "broken exited", 30)
    status = mesh.ctl("status").stdout
    assert "broken/app exited with code 1: boom: no config" in status, status
    mesh.ctl("delete", "-f", str(tmp_path / "c.yaml"))


def test_a_program_gone_at_restart_is_a_run_container_error(mesh: Mesh, tmp_path: Path) -> None:
    script = tmp_path / "app.sh"
    script.write_text('#!/bin/sh\nexec "$0.py" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    apply_text(mesh, tmp_path / "s.yaml", broken(str(script)), "--no-wait")
    mesh.ctl("down")
    script.unlink()
    out = mesh.ctl("up", check=False)
    assert out.returncode == 1, out.stdout
    assert "broken: RunContainerError: exec" in out.stderr and "No such file" in out.stderr
    rows = {r["name"]: r for r in mesh.status()}
    assert rows["broken"]["app"] == "RunContainerError"
    assert rows["fine"]["app"] == "Running" and rows["fine"]["app_ready"] is True
    assert "RunContainerError" in mesh.ctl("status").stdout
    mesh.ctl("delete", "-f", str(tmp_path / "s.yaml"))
