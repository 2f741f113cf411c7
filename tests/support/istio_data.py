"""Istio's own files the tests read (bootstraps, iptables rules, BookInfo, config dumps),
copied into ``tests/data/istio`` with Istio's paths and license (``NOTICE``, ``LICENSE``), so
that a clone of the project runs its tests on its own."""

from __future__ import annotations

from pathlib import Path

__all__ = ["BOOKINFO", "BOOTSTRAP_GOLDENS", "IPTABLES_GOLDENS", "ISTIO", "ISTIOCTL"]

ISTIO = Path(__file__).resolve().parents[1] / "data" / "istio"
BOOTSTRAP_GOLDENS = ISTIO / "pkg/bootstrap/testdata"
IPTABLES_GOLDENS = ISTIO / "tools/istio-iptables/pkg/capture/testdata"
BOOKINFO = ISTIO / "samples/bookinfo"
ISTIOCTL = ISTIO / "istioctl"
