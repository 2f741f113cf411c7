"""Pods made of Linux network namespaces, for iptables capture mode (needs root).

A :class:`PodNetwork` is a dedicated "node" namespace holding a bridge (``br0``) with the
subnet's first address as gateway; :meth:`PodNetwork.pod` makes a :class:`Pod`: its own
network namespace joined to the bridge by a veth pair (``eth0`` in the pod), an address of
the subnet, ``lo`` up, a default route via the bridge, its own UTS namespace (hostname: the
pod's name; kept in ``/run/pf-uts/<ns>``, entered with ``nsenter``), and, as the kubelet
writes them, ``/etc/netns/<ns>/hosts`` (the pod's IP and hostname, plus any ``hosts`` given)
and ``/etc/netns/<ns>/resolv.conf`` (the cluster DNS with Kubernetes' search path), which
``ip netns exec`` bind-mounts over ``/etc/hosts`` and ``/etc/resolv.conf``.
:meth:`Pod.apply_capture` feeds ``iptables.render(...)`` to ``iptables-restore`` inside the
pod, as istio-init does.

Keeping the bridge in its own namespace touches nothing of the host's network: no host
links, routes, forwarding or iptables rules; the only host-visible things are the
namespace names (prefixed and suffixed so runs don't collide) and the ``/etc/netns/<ns>``
directories. Processes started with :meth:`Pod.popen` are remembered and ended by PID on
:meth:`Pod.close`, before the namespace is deleted. Every ``close`` is idempotent and goes on
after a failed step, so a half-built network is torn down too.

    with PodNetwork("10.77.3.0/24") as net:
        a = net.pod("a", hosts={"b.test.svc": "10.77.3.3"})
        b = net.pod("b")
        a.apply_capture(CaptureConfig(...))
        proc = a.popen(["pilotfish", "-c", "..."], uid=1337, gid=1337)
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pilotfish.mesh.capture.iptables import CaptureConfig, render
from pilotfish.mesh.processes import end_process

NETNS_ETC = Path("/etc/netns")
UTS_DIR = Path("/run/pf-uts")  # the pods' UTS namespaces, bind-mounted on files here
CLUSTER_DOMAIN = "cluster.local"
BRIDGE = "br0"
TPROXY_ROUTE_TABLE = 133  # istio-iptables' --inbound-tproxy-route-table default


class PodError(RuntimeError):
    """A command building or tearing down a pod failed."""


def _run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, check=False, timeout=30
    )
    if check and proc.returncode != 0:
        raise PodError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def available() -> str | None:
    """Why pods can't be built here (None when they can): root, ip, iptables-restore, setpriv."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "iptables-restore", "iptables", "setpriv", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    return None


def _netns_exists(name: str) -> bool:
    return (Path("/run/netns") / name).exists()


class Pod:
    """One network namespace on a :class:`PodNetwork`'s bridge; made by ``PodNetwork.pod``."""

    def __init__(
        self,
        network: PodNetwork,
        name: str,
        ip: str,
        hosts: dict[str, str],
        namespace: str = "default",
        nameserver: str | None = None,
    ) -> None:
        self.network = network
        self.name = name
        self.ns = f"{network.prefix}-{name}"
        self.ip = ip
        self.hosts = dict(hosts)
        self.namespace = namespace  # Kubernetes' namespace: the first search domain
        self.nameserver = nameserver
        self.processes: list[subprocess.Popen[Any]] = []
        self._veth = f"v{network.suffix}{network.next_index()}"  # the bridge end, < 16 chars
        self._closed = False

    @property
    def etc_dir(self) -> Path:
        return NETNS_ETC / self.ns

    @property
    def uts_file(self) -> Path:
        return UTS_DIR / self.ns

    def hosts_text(self) -> str:
        """``/etc/hosts`` as the kubelet writes it, plus ``self.hosts``."""
        lines = [
            "# Kubernetes-managed hosts file (pilotfish pod).",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            f"{self.ip}\t{self.name}",
        ]
        lines += [f"{ip}\t{host}" for host, ip in self.hosts.items()]
        return "\n".join(lines) + "\n"

    def resolv_conf_text(self) -> str:
        """``/etc/resolv.conf`` as the kubelet writes it (ClusterFirst DNS policy)."""
        search = [f"{self.namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
        return f"search {' '.join(search)}\nnameserver {self.nameserver}\noptions ndots:5\n"

    def _create(self) -> None:
        net = self.network
        _run(["ip", "netns", "add", self.ns])
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        (self.etc_dir / "hosts").write_text(self.hosts_text())
        if self.nameserver is not None:
            (self.etc_dir / "resolv.conf").write_text(self.resolv_conf_text())
        # The pod's own hostname: a UTS namespace kept by a bind mount, as `ip netns` keeps
        # network namespaces.
        UTS_DIR.mkdir(parents=True, exist_ok=True)
        self.uts_file.touch()
        _run(["unshare", f"--uts={self.uts_file}", "hostname", self.name])
        _run(
            [
                "ip",
                "-n",
                net.ns,
                "link",
                "add",
                self._veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                self.ns,
            ]
        )
        _run(["ip", "-n", net.ns, "link", "set", self._veth, "master", BRIDGE, "up"])
        _run(["ip", "-n", self.ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.ns, "addr", "add", f"{self.ip}/{net.prefixlen}", "dev", "eth0"])
        _run(["ip", "-n", self.ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", self.ns, "route", "add", "default", "via", net.gateway])

    # -- running things in the pod ----------------------------------------------------------

    def command(
        self,
        argv: Sequence[str],
        *,
        uid: int | None = None,
        gid: int | None = None,
        caps: Sequence[str] = (),
    ) -> list[str]:
        """``argv`` run inside the pod (``ip netns exec``), as ``uid``/``gid`` when given,
        keeping the capabilities ``caps`` (e.g. ``net_admin``: IP_TRANSPARENT in TPROXY mode,
        which Istio grants the proxy) as ambient ones. ``nsenter``, ``ip netns exec`` and
        ``setpriv`` each exec the next, so the process keeps one PID."""
        cmd = ["nsenter", f"--uts={self.uts_file}", "ip", "netns", "exec", self.ns]
        if uid is not None or gid is not None:
            cmd += ["setpriv"]
            if uid is not None:
                cmd += ["--reuid", str(uid)]
            if gid is not None:
                cmd += ["--regid", str(gid)]
            if caps:
                wanted = ",".join(f"+{c}" for c in caps)
                cmd += ["--inh-caps", wanted, "--ambient-caps", wanted]
            cmd += ["--clear-groups", "--"]
        return cmd + list(argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        uid: int | None = None,
        gid: int | None = None,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion inside the pod; the caller checks the result."""
        return subprocess.run(
            self.command(argv, uid=uid, gid=gid),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def popen(
        self,
        argv: Sequence[str],
        *,
        uid: int | None = None,
        gid: int | None = None,
        caps: Sequence[str] = (),
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start a process inside the pod; it is ended (by PID) when the pod closes.
        ``ip netns exec`` and ``setpriv`` exec, so the PID is the program's own."""
        proc: subprocess.Popen[Any] = subprocess.Popen(
            self.command(argv, uid=uid, gid=gid, caps=caps), **kwargs
        )
        self.processes.append(proc)
        return proc

    # -- capture -------------------------------------------------------------------------

    def apply_capture(self, cfg: CaptureConfig) -> str:
        """istio-init: load ``render(cfg)`` with ``iptables-restore`` in the pod; returns it."""
        rules = render(cfg)
        _run(self.command(["iptables-restore", "--noflush"]), stdin=rules)
        if cfg.inbound_intercept_mode == "TPROXY":
            # What istio-iptables adds in TPROXY mode: marked packets are delivered locally.
            mark, table = str(cfg.inbound_tproxy_mark), str(TPROXY_ROUTE_TABLE)
            _run(
                ["ip", "-n", self.ns, "-f", "inet", "rule", "add", "fwmark", mark, "lookup", table]
            )
            _run(
                [
                    "ip",
                    "-n",
                    self.ns,
                    "-f",
                    "inet",
                    "route",
                    "add",
                    "local",
                    "default",
                    "dev",
                    "lo",
                    "table",
                    table,
                ]
            )
        return rules

    def iptables_save(self, table: str = "nat") -> str:
        return _run(self.command(["iptables-save", "-t", table]))

    def remove_capture(self) -> None:
        """Flush and delete the nat and mangle chains (the namespace's deletion would too)."""
        for table in ("nat", "mangle"):
            _run(self.command(["iptables", "-t", table, "-F"]), check=False)
            _run(self.command(["iptables", "-t", table, "-X"]), check=False)

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop our processes, delete the namespace (its links, addresses, routes and rules
        go with it; the veth pair with its pod end) and /etc/netns/<ns>. Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for proc in reversed(self.processes):
            try:
                end_process(proc)
            except Exception as e:  # keep tearing down
                errors.append(f"pid {proc.pid}: {e}")
        if _netns_exists(self.ns):
            self.remove_capture()
            try:
                _run(["ip", "netns", "del", self.ns])
            except PodError as e:
                errors.append(str(e))
        shutil.rmtree(self.etc_dir, ignore_errors=True)
        remove_uts(self.uts_file)
        if errors:
            raise PodError("; ".join(errors))


def remove_uts(path: Path) -> None:
    """Unmount and remove a pod's UTS namespace file (the namespace goes with its last user)."""
    if path.exists():
        _run(["umount", str(path)], check=False)
        path.unlink(missing_ok=True)


class PodNetwork:
    """A bridge in its own namespace and the pods joined to it; a context manager."""

    def __init__(self, subnet: str, *, prefix: str = "pf") -> None:
        self.subnet = ipaddress.ip_network(subnet)
        if self.subnet.version != 4 or self.subnet.num_addresses < 4:
            raise ValueError(f"need an IPv4 subnet with room for pods: {subnet}")
        self.suffix = secrets.token_hex(3)
        self.prefix = f"{prefix}{self.suffix}"
        self.ns = f"{self.prefix}-node"
        self.prefixlen = self.subnet.prefixlen
        hosts = self.subnet.hosts()
        self.gateway = str(next(hosts))
        self._free = hosts
        self.pods: dict[str, Pod] = {}
        self._index = 0
        self._created = False
        self._closed = False

    def __enter__(self) -> PodNetwork:
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def create(self) -> None:
        if self._created:
            return
        self._created = True
        _run(["ip", "netns", "add", self.ns])
        _run(["ip", "-n", self.ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.ns, "link", "add", BRIDGE, "type", "bridge"])
        _run(
            ["ip", "-n", self.ns, "addr", "add", f"{self.gateway}/{self.prefixlen}", "dev", BRIDGE]
        )
        _run(["ip", "-n", self.ns, "link", "set", BRIDGE, "up"])

    def pod(
        self,
        name: str,
        *,
        ip: str | None = None,
        hosts: dict[str, str] | None = None,
        namespace: str = "default",
        nameserver: str | None = None,
    ) -> Pod:
        """A new pod (namespace ``<prefix>-<name>``) with the next free address or ``ip``;
        with ``nameserver``, a resolv.conf searching ``namespace``'s services first."""
        if name in self.pods:
            raise ValueError(f"pod {name!r} exists")
        address = ip or str(next(self._free))
        pod = Pod(self, name, address, hosts or {}, namespace, nameserver)
        self.pods[name] = pod
        try:
            pod._create()
        except BaseException:
            with contextlib.suppress(PodError):
                pod.close()
            raise
        return pod

    def next_index(self) -> int:
        """A number for a pod's veth name, never reused (pods may come and go)."""
        self._index += 1
        return self._index - 1

    def remove(self, name: str) -> None:
        """Close the pod ``name`` and forget it (its name may be used again)."""
        pod = self.pods.pop(name, None)
        if pod is not None:
            pod.close()

    def close(self) -> None:
        """Close every pod, then the node namespace. Idempotent; goes on after errors."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for pod in reversed(list(self.pods.values())):
            try:
                pod.close()
            except PodError as e:
                errors.append(str(e))
        if _netns_exists(self.ns):
            try:
                _run(["ip", "netns", "del", self.ns])
            except PodError as e:
                errors.append(str(e))
        if errors:
            raise PodError("; ".join(errors))
