"""BookInfo with Istio's own control plane: `pilotfishctl up --control-plane istiod` runs real
istiod (pilot-discovery, file mode, no Kubernetes), a real pilot-agent per proxy starting
pilotfish (and, as the oracle, Envoy) as its binaryPath, and real istio-iptables in each pod.

Each scenario runs on both meshes (the module fixture is parametrized by proxy, one mesh at a
time). Distributions are checked with binomial bounds (p < 0.001 of a false failure).

Needs root (pods) and `make istio` (`.istio/bin`); skipped without them, except in CI
(``CI`` set), where `make test` builds the binaries first and a missing one is a failure."""

from __future__ import annotations

import collections
import http.client
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_mesh_bookinfo import BOOKINFO, NET, Mesh, binomial_bounds
from tests.support.waiting import wait_for

from pilotfish.mesh.istio.binaries import IstioBinaries
from pilotfish.mesh.istio.cli import proxy_sync, syncz

ROOT = Path(__file__).resolve().parents[2]
ENVOY = ROOT / ".venv-envoy" / "bin" / "envoy"
BINARIES = IstioBinaries()
SECURITY = BOOKINFO / "security"


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (pods)"
    missing = BINARIES.missing()
    if missing:
        return f"Istio's binaries are missing ({', '.join(missing)}): `make istio`"
    return None


_SKIP = _why_not()
if _SKIP is not None and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the istiod tests: {_SKIP}")
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


class IstioMesh(Mesh):
    proxy = "pilotfish"

    def answer(self) -> dict[str, Any]:
        from pilotfish.mesh.ctl import request

        return request(self.state, {"cmd": "status"})

    @property
    def istiod_http(self) -> str:
        return str(self.answer()["istiod"]["http"])

    def synced(self) -> dict[str, dict[str, str]]:
        return {str(e["proxy"]): proxy_sync(e) for e in syncz(self.istiod_http)}

    def wait_synced(self) -> None:
        from pilotfish.mesh.istio.cli import wait_synced

        wait_synced(self.state, timeout=60)

    def apply_files(self, *paths: Path) -> None:
        self.ctl("apply", *[a for p in paths for a in ("-f", str(p))])
        self.wait_synced()

    def delete_files(self, *paths: Path) -> None:
        self.ctl("delete", *[a for p in paths for a in ("-f", str(p))])
        self.wait_synced()

    def admin(self, name: str, path: str) -> str:
        import urllib.request

        row = next(r for r in self.status() if r["name"] == name)
        with urllib.request.urlopen(f"http://{row['admin']}{path}", timeout=10) as r:
            return str(r.read().decode())

    def stats(self, name: str) -> dict[str, int]:
        out = {}
        for line in self.admin(name, "/stats").splitlines():
            key, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[key] = int(value)
        return out

    def pids(self) -> dict[str, Any]:
        return {r["name"]: (r["proxy_pid"], r["app_pid"]) for r in self.status()}


@pytest.fixture(scope="module", params=["pilotfish", "envoy"])
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IstioMesh]:
    proxy = str(request.param)
    if proxy == "envoy" and not ENVOY.exists():
        pytest.skip("no Envoy (make envoy)")
    mesh = IstioMesh(tmp_path_factory.mktemp(f"istiod-{proxy}") / "state")
    mesh.proxy = proxy
    args = ["up", str(BOOKINFO), "--control-plane", "istiod"]
    if proxy == "envoy":
        args += ["--proxy-binary", str(ENVOY)]
    try:
        out = mesh.ctl(*args).stdout
        mesh.url = next(ln.split(" ", 1)[1] for ln in out.splitlines() if ln.startswith("gateway:"))
        yield mesh
    finally:
        mesh.ctl("down", check=False)


def _routing_reset(mesh: IstioMesh) -> None:
    files = [NET / "virtual-service-all-v1.yaml", NET / "destination-rule-all.yaml"]
    mesh.ctl("delete", *[a for p in files for a in ("-f", str(p))], check=False)
    mesh.wait_synced()


def test_every_proxy_acks_every_push_and_nacks_nothing(mesh: IstioMesh) -> None:
    rows = {r["name"]: r for r in mesh.status()}
    assert set(rows) == {
        "details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3",
        "productpage-v1", "istio-ingressgateway",
    }  # fmt: skip
    synced = mesh.synced()
    for name, row in rows.items():
        states = synced[f"{name}.{row['namespace']}"]
        assert "STALE" not in states.values(), (name, states)
        assert states["cluster"] == states["listener"] == "SYNCED", (name, states)
    for name in rows:
        stats = mesh.stats(name)
        assert stats.get("cluster_manager.cds.update_rejected", 0) == 0, name
        assert stats.get("listener_manager.lds.update_rejected", 0) == 0, name
        assert stats["cluster_manager.cds.update_success"] > 0, name
        assert stats["listener_manager.lds.update_success"] > 0, name


def test_default_balancing_spreads_over_the_three_versions(mesh: IstioMesh) -> None:
    n = 60
    seen = mesh.versions(n)
    low, high = binomial_bounds(n, 1 / 3)
    for version in ("v1", "v2", "v3"):
        assert low <= seen[version] <= high, seen


def test_all_v1_then_50_50_then_jason_v2_without_restarts(mesh: IstioMesh) -> None:
    before = mesh.pids()
    try:
        mesh.apply_files(NET / "destination-rule-all.yaml", NET / "virtual-service-all-v1.yaml")
        assert mesh.versions(20) == {"v1": 20}
        mesh.apply_files(NET / "virtual-service-reviews-50-v3.yaml")
        n = 60
        seen = mesh.versions(n)
        low, high = binomial_bounds(n, 0.5)
        assert set(seen) <= {"v1", "v3"} and low <= seen["v3"] <= high, seen
        mesh.apply_files(NET / "virtual-service-reviews-test-v2.yaml")
        assert mesh.versions(10, user="jason") == {"v2": 10}
        assert mesh.versions(10) == {"v1": 10}
    finally:
        _routing_reset(mesh)
    assert mesh.pids() == before  # every change reached traffic with no process restarted


def test_fault_rule_aborts_ratings_for_jason(mesh: IstioMesh) -> None:
    try:
        mesh.apply_files(
            NET / "destination-rule-all.yaml",
            NET / "virtual-service-all-v1.yaml",
            NET / "virtual-service-reviews-test-v2.yaml",
            NET / "virtual-service-ratings-test-abort.yaml",
        )
        status, page, _ = mesh.page(user="jason")
        assert status == 200
        assert "Ratings service is currently unavailable" in page
        status, page, _ = mesh.page()
        assert "Ratings service is currently unavailable" not in page
    finally:
        mesh.delete_files(
            NET / "virtual-service-ratings-test-abort.yaml",
            NET / "virtual-service-reviews-test-v2.yaml",
        )
        _routing_reset(mesh)


def test_strict_mtls_keeps_serving_over_istio_mtls(mesh: IstioMesh) -> None:
    try:
        mesh.apply_files(SECURITY / "peer-authentication-strict.yaml")
        seen = mesh.versions(6)
        assert "none" not in seen, seen
        # STRICT inbound takes mTLS only: the pages above went over Istio mTLS, with the
        # certificates pilot-agent's SDS serves from the file-mounted mesh CA certificates.
        dump = json.loads(
            mesh.admin("productpage-v1", "/config_dump?resource=dynamic_active_secrets")
        )
        names = {c.get("name") for c in dump.get("configs", [])}
        assert {"default", "ROOTCA"} <= names, names
    finally:
        mesh.delete_files(SECURITY / "peer-authentication-strict.yaml")


def test_istiod_restart_sidecars_keep_serving_and_resync(mesh: IstioMesh) -> None:
    before = mesh.pids()
    failures: collections.Counter[str] = collections.Counter()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                mesh.page()
            except Exception as e:  # counted: the test asserts there were none
                failures[type(e).__name__] += 1
            time.sleep(0.05)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        _restart_istiod(mesh)
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(30)
    assert not failures, failures
    mesh.wait_synced()  # every agent reconnected and every proxy ACKed the new istiod
    try:
        mesh.apply_files(NET / "destination-rule-all.yaml", NET / "virtual-service-all-v1.yaml")
        assert mesh.versions(10) == {"v1": 10}
    finally:
        _routing_reset(mesh)
    assert mesh.pids() == before


def _restart_istiod(mesh: IstioMesh) -> None:
    from pilotfish.mesh.ctl import request

    old = mesh.answer()["istiod"]["pid"]
    request(mesh.state, {"cmd": "restart-istiod"})
    assert mesh.answer()["istiod"]["pid"] != old

    def connected() -> bool:
        try:
            return bool(mesh.synced())
        except (OSError, ValueError, http.client.HTTPException):
            return False  # the new istiod does not answer yet

    wait_for(connected, "proxies connected to the new istiod", timeout=30)


_TABLES: dict[str, dict[str, str]] = {}


def test_istioctl_proxy_config_reads_the_config_dump(mesh: IstioMesh, tmp_path: Path) -> None:
    """istioctl's tables from each proxy's /config_dump; pilotfish's equal Envoy's."""
    dump = tmp_path / "dump.json"
    dump.write_text(mesh.admin("reviews-v1", "/config_dump?include_eds"))
    tables = {}
    for what in ("clusters", "listeners", "routes", "endpoints", "secret"):
        out = subprocess.run(
            [str(BINARIES.istioctl), "proxy-config", what, "-f", str(dump)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, (what, out.stderr)
        assert out.stdout.strip(), what
        tables[what] = _stable(what, out.stdout)
    _TABLES[mesh.proxy] = tables
    if mesh.proxy == "envoy" and "pilotfish" in _TABLES:
        import difflib

        for what, table in tables.items():
            ours = _TABLES["pilotfish"][what]
            diff = "\n".join(
                difflib.unified_diff(
                    table.splitlines(), ours.splitlines(), "envoy", "pilotfish", lineterm=""
                )
            )
            assert ours == table, f"{what}:\n{diff}"


def _stable(what: str, text: str) -> str:
    """The table without what differs between two meshes by nature: certificate serials and
    times, pod IPs (another run, other addresses)."""
    import re

    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if what == "secret":
        lines = [" ".join(line.split()[:4]) for line in lines]
    # Envoy lists inline route configs in no defined order (a hash map): compare row sets.
    rows = sorted(re.sub(r"10\.244\.\d+\.\d+", "POD_IP", line) for line in lines[1:])
    return "\n".join(lines[:1] + rows)
