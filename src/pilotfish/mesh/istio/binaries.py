"""Istio's binaries built by ``make istio`` (``go install`` at the pinned version into
``.istio/bin``) and the Envoy bootstrap template pilot-agent renders (copied from the same
module version's ``tools/packaging/common/envoy_bootstrap.json``, which Istio's proxy image
ships as ``/var/lib/istio/envoy/envoy_bootstrap_tmpl.json``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ISTIO_VERSION", "IstioBinaries", "default_istio_dir"]

ISTIO_VERSION = "v0.0.0-20260827124520-eed52ebb66ad"  # the Makefile's ISTIO_VERSION
ENV_DIR = "PILOTFISH_ISTIO_DIR"


def default_istio_dir() -> Path:
    """``$PILOTFISH_ISTIO_DIR``, else ``.istio`` of the checkout this package runs from, else
    ``./.istio``."""
    configured = os.environ.get(ENV_DIR)
    if configured:
        return Path(configured).absolute()
    checkout = Path(__file__).resolve().parents[4] / ".istio"
    return checkout if checkout.is_dir() else Path(".istio").absolute()


class IstioBinaries:
    """``pilot-discovery``, ``pilot-agent`` (which also is ``istio-iptables``: its
    ``istio-iptables`` subcommand) and ``istioctl`` under ``DIR/bin``."""

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or default_istio_dir()

    @property
    def pilot_discovery(self) -> Path:
        return self.dir / "bin" / "pilot-discovery"

    @property
    def pilot_agent(self) -> Path:
        return self.dir / "bin" / "pilot-agent"

    @property
    def istioctl(self) -> Path:
        return self.dir / "bin" / "istioctl"

    @property
    def bootstrap_template(self) -> Path:
        return self.dir / "envoy_bootstrap_tmpl.json"

    def missing(self) -> list[str]:
        """What the mesh needs and is not there (empty: everything is; istioctl is only for
        looking at proxies)."""
        wanted = [self.pilot_discovery, self.pilot_agent, self.bootstrap_template]
        return [str(p) for p in wanted if not p.exists()]
