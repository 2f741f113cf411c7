"""Readiness probes of a workload, as a Kubernetes container declares them::

    readinessProbe:
      httpGet: {path: /health, port: 9080}     # or tcpSocket: {port: 9080}
      periodSeconds: 10                        # or exec: {command: [cat, /tmp/ready]}
      timeoutSeconds: 1

Without one, a workload is ready when its app's port accepts (``tcpSocket`` on ``port``).

The control plane plays the kubelet and pilot-agent: as Istio's injector does, an
``httpGet``/``tcpSocket`` probe is rewritten to ``GET /app-health/<workload>/readyz`` on
the pod's status port (pilot-agent's 15020, which the capture rules never redirect, so the
probe works under STRICT mTLS), and the status server (``status_port.py``) runs the original
probe from inside the pod against the app (the ``ISTIO_KUBE_APP_PROBERS`` behaviour).
``exec`` probes run the command in the app's pod, as the app's user (not rewritten, as in
Istio)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Probe", "parse_probe"]

_KINDS = ("httpGet", "tcpSocket", "exec")
_TIMINGS = {
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "failureThreshold": 3,
}
_HTTP_FIELDS = {"path", "port", "scheme", "httpHeaders", "host"}


@dataclass(frozen=True, slots=True)
class Probe:
    """One readiness probe. ``port`` 0: the workload's port."""

    kind: str  # httpGet, tcpSocket or exec
    port: int = 0
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @property
    def rewritten(self) -> bool:
        """Whether the probe goes through the pod's status port (Istio rewrites these)."""
        return self.kind in ("httpGet", "tcpSocket")

    def to_kubernetes(self) -> dict[str, Any]:
        """The probe as a pod spec writes it (kept in the state directory)."""
        action: dict[str, Any]
        if self.kind == "exec":
            action = {"command": list(self.command)}
        elif self.kind == "tcpSocket":
            action = {"port": self.port} if self.port else {}
        else:
            action = {"path": self.path}
            if self.port:
                action["port"] = self.port
            if self.headers:
                action["httpHeaders"] = [{"name": k, "value": v} for k, v in self.headers]
        return {
            self.kind: action,
            "initialDelaySeconds": self.initial_delay,
            "periodSeconds": self.period,
            "timeoutSeconds": self.timeout,
            "successThreshold": self.success_threshold,
            "failureThreshold": self.failure_threshold,
        }


def default_probe() -> Probe:
    """A workload without a probe is ready when its port accepts."""
    return Probe("tcpSocket", period=1.0)


def parse_probe(doc: Any, where: str = "readinessProbe") -> Probe:
    """A Kubernetes probe; ValueError naming the field for what it cannot do."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where}: a map is required")
    kinds = [k for k in _KINDS if k in doc]
    if len(kinds) != 1:
        raise ValueError(f"{where}: exactly one of httpGet, tcpSocket, exec is required")
    unknown = set(doc) - set(_KINDS) - set(_TIMINGS)
    if unknown:
        raise ValueError(f"{where}.{sorted(unknown)[0]}: not supported")
    timings: dict[str, float] = {}
    for name, default in _TIMINGS.items():
        value = doc.get(name, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{where}.{name}: a number >= 0 is required")
        timings[name] = value
    if timings["periodSeconds"] <= 0 or timings["timeoutSeconds"] <= 0:
        raise ValueError(f"{where}: periodSeconds and timeoutSeconds must be > 0")
    kind = kinds[0]
    action = doc[kind]
    if not isinstance(action, Mapping):
        raise ValueError(f"{where}.{kind}: a map is required")
    common: dict[str, Any] = {
        "initial_delay": float(timings["initialDelaySeconds"]),
        "period": float(timings["periodSeconds"]),
        "timeout": float(timings["timeoutSeconds"]),
        "success_threshold": max(1, int(timings["successThreshold"])),
        "failure_threshold": max(1, int(timings["failureThreshold"])),
    }
    if kind == "exec":
        command = action.get("command")
        extra = set(action) - {"command"}
        if extra:
            raise ValueError(f"{where}.exec.{sorted(extra)[0]}: unknown field")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(a, str) for a in command)
        ):
            raise ValueError(f"{where}.exec.command: a list of strings is required")
        return Probe("exec", command=tuple(command), **common)
    port = _port(action.get("port", 0), f"{where}.{kind}.port")
    if kind == "tcpSocket":
        extra = set(action) - {"port", "host"}
        if extra:
            raise ValueError(f"{where}.tcpSocket.{sorted(extra)[0]}: unknown field")
        _local_host(action, f"{where}.tcpSocket")
        return Probe("tcpSocket", port=port, **common)
    unknown = set(action) - _HTTP_FIELDS
    if unknown:
        raise ValueError(f"{where}.httpGet.{sorted(unknown)[0]}: unknown field")
    if str(action.get("scheme", "HTTP")).upper() != "HTTP":
        raise ValueError(f"{where}.httpGet.scheme: only HTTP is supported")
    _local_host(action, f"{where}.httpGet")
    path = action.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"{where}.httpGet.path: an absolute path is required")
    headers = []
    for h in action.get("httpHeaders") or []:
        if not isinstance(h, Mapping) or not isinstance(h.get("name"), str):
            raise ValueError(f"{where}.httpGet.httpHeaders: name/value pairs are required")
        headers.append((h["name"], str(h.get("value", ""))))
    return Probe("httpGet", port=port, path=path, headers=tuple(headers), **common)


def _port(value: Any, where: str) -> int:
    # Named ports (``port: http``) would need the container's port list: a workload has one.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536:
        raise ValueError(f"{where}: a port number is required")
    return value


def _local_host(action: Mapping[str, Any], where: str) -> None:
    # The kubelet probes the pod's IP; another host is not what a readiness probe is for here.
    if action.get("host") not in (None, ""):
        raise ValueError(f"{where}.host: not supported (the probe targets the pod)")
