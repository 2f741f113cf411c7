"""pilotfishctl: the local mesh's command line, modelled on istioctl and kubectl.

    pilotfishctl up [DIR]            control plane + the workloads and config in DIR
                 [--proxy-binary PATH]   run PATH (e.g. Envoy) as every proxy, not pilotfish
                 [--capture iptables]    pods (netns) with istio-iptables rules (root)
                 [--control-plane istiod] real istiod + pilot-agent (`make istio`, root)
    pilotfishctl apply -f FILE...    Istio / Kubernetes / Workload YAML
    pilotfishctl delete -f FILE...
    pilotfishctl get KIND            virtualservices, destinationrules, gateways, workloads, ...
    pilotfishctl proxy-config {listeners|routes|clusters|endpoints|secrets} WORKLOAD
    pilotfishctl status              every proxy and app, and whether it runs
    pilotfishctl logs WORKLOAD [--proxy]
    pilotfishctl down

State (config, sockets, logs) lives in ``--state`` (default ``$PILOTFISH_STATE`` or
``./.pilotfish``). ``up`` starts the control plane in the background; the other commands
talk to it over ``STATE/ctl.sock``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_STATE = ".pilotfish"


class CtlError(Exception):
    pass


# --- talking to the control plane -------------------------------------------------------------


def request(state: Path, payload: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    path = state / "ctl.sock"
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps(payload).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        raise CtlError(
            f"the control plane is not running (no answer on {path}); start it with "
            "`pilotfishctl up`"
        ) from None
    answer: dict[str, Any] = json.loads(data)
    if not answer.get("ok"):
        raise CtlError("\n".join(answer.get("errors") or ["request failed"]))
    return answer


def running(state: Path) -> bool:
    try:
        request(state, {"cmd": "status"}, timeout=5)
    except CtlError:
        return False
    return True


def start_control_plane(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "logs").mkdir(exist_ok=True)
    with (state / "logs" / "controlplane.log").open("ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "pilotfish.mesh.ctl", "--state", str(state), "daemon"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "GRPC_VERBOSITY": os.environ.get("GRPC_VERBOSITY", "ERROR")},
        )
    deadline = time.monotonic() + 60  # a loaded 2-core machine took more than 30 s
    while not running(state):
        if time.monotonic() > deadline:
            raise CtlError(f"the control plane did not start; see {state}/logs/controlplane.log")
        time.sleep(0.1)


def wait_ready(state: Path, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Wait until the mesh serves: every proxy has ACKed the current config of every type
    it asked for (``istioctl proxy-status`` SYNCED), its listeners are up (admin ``/ready``
    LIVE, none warming) and every app passes its readiness probe. A workload that failed (its
    app or proxy exited or could not start) is not waited for. Returns the status rows."""
    deadline = time.monotonic() + timeout
    while True:
        rows = request(state, {"cmd": "status"})["rows"]
        pending = [r["name"] for r in rows if not failed(r) and not _ready(r)]
        if not pending:
            return list(rows)
        if time.monotonic() > deadline:
            reasons = {r["name"]: r.get("reason") or _sync_text(r) for r in rows}
            raise CtlError(
                "not ready after %ds: %s (see `pilotfishctl status` and `pilotfishctl logs`)"
                % (timeout, "; ".join(f"{n}: {reasons[n]}" for n in pending))
            )
        time.sleep(0.2)  # each round asks every proxy's admin: keep the load they see low


def failed(row: dict[str, Any]) -> bool:
    """The workload's app or proxy has exited or could not be started."""
    return any(row[k] not in ("Running", "-") for k in ("app", "proxy"))


def synced(row: dict[str, Any]) -> bool:
    """The control plane saw the proxy ACK the last response of every type (CDS and LDS at
    least), with no push pending."""
    if "sync" not in row:  # not this control plane's streams (istiod: see istio/cli.py)
        return True
    sync = row.get("sync") or {}
    return (
        sync.get("CDS") == "SYNCED"
        and sync.get("LDS") == "SYNCED"
        and all(v in ("SYNCED", "-") for v in sync.values())
    )


def _sync_text(row: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in (row.get("sync") or {}).items())


def _ready(row: dict[str, Any]) -> bool:
    if failed(row) or row.get("app_ready") is False or not synced(row):
        return False
    return _listeners_up(row["admin"])


def _listeners_up(admin: str) -> bool:
    """Admin ``/ready`` says LIVE and no listener is warming (Envoy's listener_manager stats)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{admin}/ready", timeout=5) as r:
            if r.read().strip() != b"LIVE":
                return False
        url = f"http://{admin}/stats?filter=^listener_manager%5C.(total_listeners_warming|workers_started)$"
        with opener.open(url, timeout=5) as r:
            stats = dict(
                line.rsplit(": ", 1) for line in r.read().decode().splitlines() if ": " in line
            )
    except OSError:
        return False
    return (
        stats.get("listener_manager.total_listeners_warming") == "0"
        and stats.get("listener_manager.workers_started") == "1"
    )


def gateway_url(rows: Sequence[dict[str, Any]]) -> str | None:
    for row in rows:
        if row["kind"] == "router" and row["listen"]:
            ports = row["listen"]
            port = ports.get("80") or ports.get("8080") or next(iter(ports.values()))
            return f"http://127.0.0.1:{port}"
    return None


# --- commands ---------------------------------------------------------------------------------


def yaml_files(paths: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(x for x in p.iterdir() if x.suffix in (".yaml", ".yml"))
        elif p.exists():
            out.append(p)
        else:
            raise CtlError(f"{p}: no such file")
    return out


def cmd_apply(
    state: Path, files: Sequence[str], delete: bool = False, wait: bool = True
) -> list[dict[str, Any]]:
    """Apply (or delete) each file; then, with ``wait``, return when the mesh serves what was
    applied (``wait_ready``): the status rows."""
    for path in yaml_files(files):
        answer = request(
            state,
            {"cmd": "delete" if delete else "apply", "yaml": path.read_text(), "source": str(path)},
        )
        for line in answer["lines"]:
            print(line, flush=True)
    return wait_ready(state) if wait else []


def cmd_up(
    state: Path,
    directory: str | None,
    proxy_binary: str | None = None,
    capture: str | None = None,
    control_plane: str | None = None,
) -> None:
    """``proxy_binary``: the program every proxy runs (Envoy, or anything that takes Envoy's
    command line and bootstrap); ``pilotfish`` for pilotfish; ``None`` keeps what the state
    directory has (pilotfish at first). ``capture``: ``iptables`` (pods with capture rules,
    root), ``none`` (loopback), ``None`` keeps what the state directory has.
    ``control_plane``: ``embedded`` or ``istiod`` (``mesh/istio``), ``None`` keeps it."""
    from pilotfish.mesh.capture.supervisor import capture_available, load_mode, save_mode
    from pilotfish.mesh.istio import cli as istio_cli
    from pilotfish.mesh.runner import save_proxy_binary, saved_proxy_binary

    istiod = istio_cli.prepare_up(state, control_plane, capture, running(state))
    if istiod:
        capture = None  # istiod's pods always capture (istio-iptables)

    if proxy_binary not in (None, "pilotfish") and not os.access(proxy_binary, os.X_OK):
        raise CtlError(f"--proxy-binary {proxy_binary}: not an executable file")
    if (capture or load_mode(state)) == "iptables" and capture != "none":
        why = capture_available()
        if why is not None:
            raise CtlError(f"--capture iptables: {why} (root, ip, iptables-restore, setpriv)")
    if not running(state):
        if proxy_binary is not None:
            save_proxy_binary(state, proxy_binary)
        if capture is not None:
            save_mode(state, capture)
        print(f"starting the control plane (state in {state}) ...", flush=True)
        start_control_plane(state)
    elif proxy_binary is not None:
        serving = request(state, {"cmd": "status"}).get("proxy_binary") or "pilotfish"
        wanted = "pilotfish" if proxy_binary == "pilotfish" else str(Path(proxy_binary).absolute())
        if serving != wanted:
            raise CtlError(
                f"the control plane runs {serving} as its proxies; `pilotfishctl down` first "
                "to change it"
            )
    if capture is not None and running(state):
        serving = request(state, {"cmd": "status"}).get("capture") or "none"
        if serving != capture:
            raise CtlError(
                f"the control plane runs with --capture {serving}; `pilotfishctl down` first "
                "to change it"
            )
    binary = saved_proxy_binary(state)
    if binary:
        print(f"proxies: {binary}", flush=True)
    if directory:
        print(f"applying {directory} ...", flush=True)
        cmd_apply(state, [directory], wait=False)
    print("waiting for the workloads and their sidecars ...", flush=True)
    rows = wait_ready(state)
    if istiod:
        istio_cli.wait_synced(state)
    for row in rows:
        ready = "-" if row.get("app_ready") is None else str(row["app_ready"]).lower()
        print(
            f"  {row['name']:<28} app {row['app']:<10} ready {ready:<6} proxy {row['proxy']:<8} "
            + ("SYNCED" if synced(row) and row.get("sync") else _sync_text(row))
        )
    url = gateway_url(rows)
    if url:
        print(f"gateway: {url}")
    status = request(state, {"cmd": "status"})
    if status.get("prometheus"):
        print(f"prometheus: {status['prometheus']}")
    if status.get("dashboard"):
        print(f"dashboard: {status['dashboard']}")
    broken = [r for r in rows if failed(r)]
    if broken:
        raise CtlError(
            "; ".join(f"{r['name']}: {r.get('reason') or 'failed'}" for r in broken)
            + " (the rest of the mesh serves)"
        )


def cmd_dashboard(state: Path) -> None:
    """Print the dashboard's URL (the control plane serves it while the mesh runs)."""
    if not running(state):
        raise CtlError("the control plane is not running (`pilotfishctl up` first)")
    status = request(state, {"cmd": "status"})
    print(status.get("dashboard") or "no dashboard")
    if not status.get("prometheus"):
        print(
            "no Prometheus: the graph and charts stay empty (apt-get install prometheus, then "
            "`pilotfishctl down` and `up`)",
            file=sys.stderr,
        )


def cmd_get(state: Path, kind: str) -> None:
    rows = request(state, {"cmd": "get", "kind": kind})["rows"]
    if kind.lower() in ("workload", "workloads", "wl"):
        table(
            [[r["name"], r["namespace"], r["app"], r["proxy"]] for r in rows],
            ["NAME", "NAMESPACE", "APP", "PROXY"],
        )
        return
    table([[r["namespace"], r["name"]] for r in rows], ["NAMESPACE", "NAME"])


def cmd_status(state: Path) -> None:
    rows = request(state, {"cmd": "status"})["rows"]
    table(
        [
            [
                r["name"],
                r["kind"],
                r["app"],
                r["proxy"],
                "true" if _ready(r) else "false",
                *(r.get("sync") or {}).values(),
                r["admin"],
                r.get("reason") or "",
            ]
            for r in rows
        ],
        ["NAME", "KIND", "APP", "PROXY", "READY", "CDS", "LDS", "EDS", "RDS", "ADMIN", "REASON"],
    )


def cmd_logs(state: Path, name: str, proxy: bool) -> None:
    path = state / "logs" / f"{name}.{'proxy' if proxy else 'app'}.log"
    if not path.exists():
        raise CtlError(f"no logs for {name!r} (see `pilotfishctl status` for the names)")
    sys.stdout.write(path.read_text(errors="replace"))


def cmd_down(state: Path) -> None:
    from pilotfish.mesh.capture.supervisor import clean_leftovers

    if not running(state):
        # A capture-mode control plane that crashed leaves pods behind: remove them.
        removed = clean_leftovers(state) if os.geteuid() == 0 else []
        print(
            "the control plane is not running"
            + (f"; removed {len(removed)} leftovers" if removed else "")
        )
        return
    request(state, {"cmd": "down"})
    # Wait for the process to be gone: it removes its sockets last, and a new control plane
    # on the same state directory must not have them removed under it.
    pid_file = state / "controlplane.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else 0
    deadline = time.monotonic() + 60
    while pid and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if os.geteuid() == 0:
        clean_leftovers(state)  # nothing when the control plane removed everything
    print("stopped")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    cells = [list(map(str, header)), *[list(map(str, r)) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `pilotfishctl ... | head` ends quietly
    parser = argparse.ArgumentParser(prog="pilotfishctl", description=__doc__.split("\n")[0])
    parser.add_argument("--state", default=os.environ.get("PILOTFISH_STATE", DEFAULT_STATE))
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the control plane and the mesh in DIR")
    up.add_argument("dir", nargs="?")
    up.add_argument(
        "--proxy-binary",
        default=os.environ.get("PILOTFISH_PROXY_BINARY") or None,
        metavar="PATH",
        help="run PATH (e.g. Envoy) as every sidecar and the gateway instead of pilotfish; "
        "kept in the state directory ('pilotfish' goes back to pilotfish; env "
        "PILOTFISH_PROXY_BINARY)",
    )
    up.add_argument(
        "--control-plane",
        choices=["embedded", "istiod"],
        default=None,
        help="istiod: Istio's own pilot-discovery as the control plane and a pilot-agent "
        "starting every proxy (built by `make istio`; pods as with --capture iptables, root); "
        "embedded: pilotfishctl's own (the default); kept in the state directory",
    )
    up.add_argument(
        "--capture",
        choices=["iptables", "none"],
        default=None,
        help="iptables: run each workload in its own network namespace with istio-iptables "
        "rules, the sidecar as uid 1337 (needs root); none: loopback mode (the default); kept "
        "in the state directory",
    )
    for name in ("apply", "delete"):
        p = sub.add_parser(name, help=f"{name} YAML files or directories")
        p.add_argument("-f", "--filename", action="append", required=True)
        p.add_argument(
            "--no-wait",
            action="store_true",
            help="return at once, not when every proxy has ACKed the change and every "
            "workload is ready",
        )
    get = sub.add_parser("get", help="list objects of a kind")
    get.add_argument("kind")
    pc = sub.add_parser("proxy-config", help="a proxy's config, as istioctl shows it")
    pc.add_argument(
        "what", choices=["listeners", "routes", "clusters", "endpoints", "secrets", "all"]
    )
    pc.add_argument("workload")
    pc.add_argument("-o", "--output", choices=["table", "json"], default="table")
    sub.add_parser("status", help="every proxy and app")
    sub.add_parser("dashboard", help="the URL of the mesh's dashboard (graph, charts, sync)")
    logs = sub.add_parser("logs", help="a workload's app (or --proxy) output")
    logs.add_argument("workload")
    logs.add_argument("--proxy", action="store_true")
    sub.add_parser("down", help="stop everything")
    sub.add_parser("daemon", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    state = Path(args.state).absolute()
    try:
        if args.command == "daemon":
            return run_daemon(state)
        if args.command == "up":
            cmd_up(state, args.dir, args.proxy_binary, args.capture, args.control_plane)
        elif args.command in ("apply", "delete"):
            cmd_apply(state, args.filename, delete=args.command == "delete", wait=not args.no_wait)
        elif args.command == "get":
            cmd_get(state, args.kind)
        elif args.command == "proxy-config":
            from pilotfish.mesh.proxy_config import show

            rows = request(state, {"cmd": "status"})["rows"]
            row = next((r for r in rows if r["name"] == args.workload), None)
            if row is None:
                raise CtlError(f"no workload {args.workload!r} (see `pilotfishctl status`)")
            show(row["admin"], args.what, args.output)
        elif args.command == "status":
            cmd_status(state)
        elif args.command == "dashboard":
            cmd_dashboard(state)
        elif args.command == "logs":
            cmd_logs(state, args.workload, args.proxy)
        elif args.command == "down":
            cmd_down(state)
    except CtlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def run_daemon(state: Path) -> int:
    import logging

    import uvloop

    from pilotfish.mesh.capture.supervisor import load_mode
    from pilotfish.mesh.controlplane import ControlPlane, istio_translate
    from pilotfish.mesh.istio.plane import IstiodControlPlane, load_control_plane

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    plane: ControlPlane
    if load_control_plane(state) == "istiod":
        plane = IstiodControlPlane(state)
    else:
        plane = ControlPlane(state, istio_translate, capture=load_mode(state))
    pid_file = state / "controlplane.pid"
    pid_file.write_text(str(os.getpid()))
    try:
        uvloop.run(plane.run())
    finally:
        pid_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
