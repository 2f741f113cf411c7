"""``pilotfishctl up --control-plane istiod``: the checks before starting, and the wait for
every proxy to be SYNCED (``istioctl proxy-status``'s word: istiod's ``/debug/syncz`` shows
each type it sent to the proxy acknowledged with the nonce it was sent with)."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["prepare_up", "proxy_sync", "syncz", "wait_synced"]

# istiod's /debug/syncz fields: what was sent and acknowledged, per xDS type.
SYNC_TYPES = ("cluster", "listener", "route", "endpoint")
QUIET = 0.3  # seconds between polls; nonces unchanged over one such interval: pushed


def prepare_up(
    state: Path, control_plane: str | None, capture: str | None, is_running: bool
) -> bool:
    """Check and store the control plane choice; True when the mesh runs (or will run) on
    istiod."""
    from pilotfish.mesh.capture.supervisor import capture_available
    from pilotfish.mesh.ctl import CtlError, request
    from pilotfish.mesh.istio.binaries import IstioBinaries
    from pilotfish.mesh.istio.plane import load_control_plane, save_control_plane

    if is_running:
        serving = request(state, {"cmd": "status"}).get("control_plane") or "embedded"
        if control_plane is not None and control_plane != serving:
            raise CtlError(
                f"the mesh runs on the {serving} control plane; `pilotfishctl down` first "
                "to change it"
            )
        return serving == "istiod"
    wanted = control_plane or load_control_plane(state)
    if wanted != "istiod":
        if control_plane is not None:
            save_control_plane(state, control_plane)
        return False
    if capture == "none":
        raise CtlError("--control-plane istiod runs every workload in a pod: no --capture none")
    missing = IstioBinaries().missing()
    if missing:
        raise CtlError(f"Istio's binaries are missing ({', '.join(missing)}); run `make istio`")
    why = capture_available()
    if why is not None:
        raise CtlError(f"--control-plane istiod: {why} (root, ip, iptables-restore, setpriv)")
    save_control_plane(state, "istiod")
    return True


def syncz(http: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """istiod's ``/debug/syncz`` (one entry per connected proxy)."""
    with urllib.request.urlopen(f"http://{http}/debug/syncz", timeout=timeout) as r:
        data = json.loads(r.read() or b"[]")
    return list(data or [])


def proxy_sync(entry: dict[str, Any]) -> dict[str, str]:
    """Each type's state for one proxy: ``SYNCED``, ``STALE`` (sent, not acknowledged yet)
    or ``NOT SENT`` (as ``istioctl proxy-status`` prints them)."""
    out = {}
    for kind in SYNC_TYPES:
        sent = entry.get(f"{kind}_sent") or ""
        acked = entry.get(f"{kind}_acked") or ""
        if not sent:
            out[kind] = "NOT SENT"
        elif sent == acked:
            out[kind] = "SYNCED"
        else:
            out[kind] = "STALE"
    return out


def istiod_has(http: str, hashes: list[str]) -> bool:
    """Whether istiod's config store (``/debug/configz``) holds every object as last written
    (each carries its content hash, ``configdir.HASH_ANNOTATION``)."""
    with urllib.request.urlopen(f"http://{http}/debug/configz", timeout=5) as r:
        text = r.read().decode()
    return all(h in text for h in hashes)


def wait_synced(state: Path, timeout: float = 60.0) -> dict[str, dict[str, str]]:
    """Until istiod has read the config as last written, has pushed it, and shows every proxy
    of the mesh connected with no type STALE (sent and not acknowledged); returns each proxy's
    types. ``NOT SENT`` is fine (a gateway gets no endpoints of some kinds).

    "Has pushed it": istiod pushes a debounced time after a change (``PILOT_DEBOUNCE_AFTER``,
    50 ms here) and sends to every proxy in one push, so the nonces must stay the same over two
    polls ``QUIET`` apart after istiod read the change."""
    from pilotfish.mesh.ctl import CtlError, request

    deadline = time.monotonic() + timeout
    pending: list[str] = ["(not asked yet)"]
    last: dict[str, dict[str, Any]] | None = None
    while True:
        answer = request(state, {"cmd": "status"})
        istiod = answer["istiod"]
        debug = istiod["http"]
        wanted = {
            f"{r['name']}.{r['namespace']}": r for r in answer["rows"] if r["proxy"] == "Running"
        }
        try:
            ingested = istiod_has(debug, list(istiod.get("config_hashes") or []))
            entries = syncz(debug) if ingested else []
        except (OSError, ValueError, http.client.HTTPException):
            ingested, entries = False, []  # istiod is (re)starting
        seen = {str(e.get("proxy", "")): e for e in entries}
        states = {proxy: proxy_sync(e) for proxy, e in seen.items()}
        pending = [
            name
            for name in wanted
            if name not in states
            or "STALE" in states[name].values()
            or states[name].get("listener") != "SYNCED"
        ]
        if not ingested:
            pending = ["(istiod has not read the config yet)"]
        elif not pending and last == seen:
            return {name: states[name] for name in wanted}
        last = seen if ingested and not pending else None
        if time.monotonic() > deadline:
            raise CtlError(
                f"not SYNCED with istiod after {timeout:.0f}s: {', '.join(pending) or 'pushing'} "
                "(see `pilotfishctl logs NAME --proxy` and STATE/logs/istiod.log)"
            )
        time.sleep(QUIET)
