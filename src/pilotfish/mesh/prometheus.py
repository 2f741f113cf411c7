"""A real Prometheus for the local mesh, as Istio's Prometheus add-on: it scrapes every sidecar
and the gateway on Envoy's ``/stats/prometheus`` (what pilot-agent serves on 15090), with the
pod's labels on each target, every ``SCRAPE_INTERVAL``.

Started by the control plane when Debian's ``prometheus`` is installed (``pilotfishctl up``);
its targets are a ``file_sd`` file rewritten when proxies come and go (Prometheus re-reads it,
no restart). Data and config live in ``<state>/prometheus/``; the port is in ``port``.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pilotfish.mesh.runner import ManagedProcess

SCRAPE_INTERVAL = "5s"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape_config(targets_file: Path) -> str:
    """prometheus.yml: one job over the proxies' admin ``/stats/prometheus`` (Istio's add-on
    calls it ``envoy-stats``)."""
    return (
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL}\n"
        f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
        "scrape_configs:\n"
        "- job_name: envoy-stats\n"
        "  metrics_path: /stats/prometheus\n"
        "  file_sd_configs:\n"
        f"  - files: [{json.dumps(str(targets_file))}]\n"
        "    refresh_interval: 2s\n"
    )


def targets(proxies: Iterable[Any]) -> list[dict[str, Any]]:
    """file_sd entries: a proxy's admin address with its pod's labels."""
    out = []
    for p in proxies:
        labels = {
            "pod": p.name,
            "namespace": p.namespace,
            "kind": p.kind,
            **{k: v for k, v in p.labels.items() if k in ("app", "version", "istio")},
        }
        out.append({"targets": [f"127.0.0.1:{p.admin_port}"], "labels": labels})
    return sorted(out, key=lambda t: t["targets"][0])


class PrometheusAddon:
    def __init__(self, state_dir: Path, binary: str) -> None:
        self.dir = state_dir / "prometheus"
        self.binary = binary
        self.targets_file = self.dir / "targets.json"
        self.port = 0
        self.process: ManagedProcess | None = None
        self._last = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self.port else ""

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "prometheus.yml"
        config.write_text(scrape_config(self.targets_file))
        if not self.targets_file.exists():
            self.targets_file.write_text("[]\n")
        self.port = _free_port()
        (self.dir / "port").write_text(f"{self.port}\n")
        argv = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]
        self.process = ManagedProcess("prometheus", argv, self.dir / "prometheus.log")
        self.process.start()

    def update(self, proxies: Iterable[Any]) -> None:
        """Rewrite the targets when they changed (atomically: Prometheus may be reading)."""
        text = json.dumps(targets(proxies), indent=1) + "\n"
        if text == self._last:
            return
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.targets_file)
        self._last = text

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        (self.dir / "port").unlink(missing_ok=True)


def saved_url(state_dir: Path) -> str:
    """The running add-on's URL ("" if none), for the CLI and the dashboard."""
    port_file = state_dir / "prometheus" / "port"
    if not port_file.exists():
        return ""
    return f"http://127.0.0.1:{port_file.read_text().strip()}"
