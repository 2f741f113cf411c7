"""The iptables-restore rules of Istio's `istio-iptables` (istio-init), for a sidecar.

Pure: `render(CaptureConfig(...))` returns the text fed to `iptables-restore` (then, with
`enable_ipv6`, to `ip6tables-restore`); nothing here needs root. Written from the shape of
Istio's golden outputs (tools/istio-iptables/pkg/capture/testdata) and its documented flags:

    istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020

Chains: ISTIO_INBOUND (PREROUTING, inbound ports -> ISTIO_IN_REDIRECT -> 15006),
ISTIO_OUTPUT (OUTPUT; the proxy's own uid/gid return, the 127.0.0.6 return path of inbound
passthrough, app-to-self over lo goes back inbound), ISTIO_REDIRECT (-> 15001),
ISTIO_OUTPUT_DNS (DNS to the agent's 15053 when `redirect_dns`), and in TPROXY mode the
mangle table's ISTIO_DIVERT / ISTIO_TPROXY.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

TABLE_ORDER = ("mangle", "nat", "raw")
_BUILTIN = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
_TARGETS = {"RETURN", "ACCEPT", "DROP", "REDIRECT", "MARK", "CT", "TPROXY", "CONNMARK"}

INBOUND = "ISTIO_INBOUND"
OUTPUT = "ISTIO_OUTPUT"
REDIRECT = "ISTIO_REDIRECT"
IN_REDIRECT = "ISTIO_IN_REDIRECT"
OUTPUT_DNS = "ISTIO_OUTPUT_DNS"
DIVERT = "ISTIO_DIVERT"
TPROXY = "ISTIO_TPROXY"
DROP = "ISTIO_DROP"


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@dataclass
class CaptureConfig:
    """The common `istio-iptables` options (flag names in comments)."""

    proxy_port: int = 15001  # -p
    inbound_capture_port: int = 15006  # -z
    inbound_tunnel_port: int = 15008  # HBONE port, always returned from
    proxy_uid: str = "1337"  # -u (comma-separated)
    proxy_gid: str = "1337"  # -g (comma-separated)
    inbound_intercept_mode: str = "REDIRECT"  # -m REDIRECT | TPROXY
    inbound_tproxy_mark: int = 1337  # -t
    inbound_ports_include: str = ""  # -b: "*" or ports
    inbound_ports_exclude: str = ""  # -d
    outbound_ip_ranges_include: str = ""  # -i: "*" or CIDRs
    outbound_ip_ranges_exclude: str = ""  # -x
    outbound_ports_include: str = ""  # -q
    outbound_ports_exclude: str = ""  # -o
    outbound_owner_groups_include: str = ""  # --include-outbound-owner-groups
    outbound_owner_groups_exclude: str = ""  # --exclude-outbound-owner-groups
    kube_virt_interfaces: str = ""  # -k
    exclude_interfaces: str = ""  # -c
    host_ipv4_loopback_cidr: str = "127.0.0.1/32"
    redirect_dns: bool = False  # --redirect-dns
    dns_servers_v4: list[str] = field(default_factory=list)  # from /etc/resolv.conf
    dns_servers_v6: list[str] = field(default_factory=list)
    drop_invalid: bool = False  # INVALID_DROP
    enable_ipv6: bool = False  # ENABLE_INBOUND_IPV6


@dataclass
class _Rules:
    """Rules in the order they are generated, grouped per table when rendered."""

    rules: dict[str, list[str]] = field(default_factory=dict)

    def add(self, table: str, line: str) -> None:
        self.rules.setdefault(table, []).append(line)

    def render(self) -> str:
        out: list[str] = []
        for table in TABLE_ORDER:
            lines = self.rules.get(table)
            if not lines:
                continue
            out.append(f"* {table}")
            out.extend(f"-N {chain}" for chain in _chains(lines))
            out.extend(lines)
            out.append("COMMIT")
        return "".join(line + "\n" for line in out)


def _chains(lines: list[str]) -> list[str]:
    """User chains in order of first appearance (as the chain or as a jump target)."""
    seen: list[str] = []
    for line in lines:
        words = line.split()
        names = [words[1]]
        if "-j" in words:
            names.append(words[words.index("-j") + 1])
        for name in names:
            if name not in _BUILTIN and name not in _TARGETS and name not in seen:
                seen.append(name)
    return seen


def _family_cidrs(value: str, v6: bool) -> tuple[bool, list[str]]:
    """(wildcard, CIDRs of the family); a bare address gets its full-length prefix."""
    wildcard = False
    cidrs: list[str] = []
    for item in _split(value):
        if item == "*":
            wildcard = True
            continue
        net = ipaddress.ip_network(item, strict=False)
        if (net.version == 6) == v6:
            cidrs.append(item if "/" in item else f"{item}/{net.max_prefixlen}")
    return wildcard, cidrs


def _is_loopback(cidr: str) -> bool:
    return ipaddress.ip_network(cidr, strict=False).network_address.is_loopback


def _family(cfg: CaptureConfig, v6: bool) -> str:
    r = _Rules()
    localhost = "::1/128" if v6 else cfg.host_ipv4_loopback_cidr
    inbound_passthrough = "::6/128" if v6 else "127.0.0.6/32"
    uids = _split(cfg.proxy_uid)
    gids = _split(cfg.proxy_gid)
    tproxy = cfg.inbound_intercept_mode == "TPROXY"
    dns_servers = cfg.dns_servers_v6 if v6 else cfg.dns_servers_v4
    in_ports = _split(cfg.inbound_ports_include)
    in_excluded = _split(cfg.inbound_ports_exclude)
    out_wildcard, out_include = _family_cidrs(cfg.outbound_ip_ranges_include, v6)
    _, out_exclude = _family_cidrs(cfg.outbound_ip_ranges_exclude, v6)
    virt = _split(cfg.kube_virt_interfaces)

    if cfg.drop_invalid:
        r.add("mangle", f"-A PREROUTING -m conntrack --ctstate INVALID -j {DROP}")
        r.add("mangle", f"-A {DROP} -j DROP")

    for nic in _split(cfg.exclude_interfaces):
        for table in ("mangle", "nat") if tproxy else ("nat",):
            r.add(table, f"-A PREROUTING -i {nic} -j RETURN")
            r.add(table, f"-A OUTPUT -o {nic} -j RETURN")
    for nic in virt:
        r.add("nat", f"-I PREROUTING 1 -i {nic} -j RETURN")

    r.add("nat", f"-A {INBOUND} -p tcp --dport {cfg.inbound_tunnel_port} -j RETURN")
    r.add("nat", f"-A {REDIRECT} -p tcp -j REDIRECT --to-ports {cfg.proxy_port}")
    r.add("nat", f"-A {IN_REDIRECT} -p tcp -j REDIRECT --to-ports {cfg.inbound_capture_port}")

    # Inbound.
    if in_ports:
        if tproxy:
            mark = cfg.inbound_tproxy_mark
            r.add("mangle", f"-A {DIVERT} -j MARK --set-mark {mark}")
            r.add("mangle", f"-A {DIVERT} -j ACCEPT")
            r.add(
                "mangle",
                f"-A {TPROXY} ! -d {localhost} -p tcp -j TPROXY --tproxy-mark "
                f"{mark}/0xffffffff --on-port {cfg.inbound_capture_port}",
            )
            table, capture = "mangle", TPROXY
        else:
            table, capture = "nat", IN_REDIRECT
        r.add(table, f"-A PREROUTING -p tcp -j {INBOUND}")
        if in_ports == ["*"]:
            for port in in_excluded:
                r.add(table, f"-A {INBOUND} -p tcp --dport {port} -j RETURN")
            selectors = [""]
        else:
            selectors = [f" --dport {port}" for port in in_ports]
        for sel in selectors:
            if tproxy:
                r.add(
                    table,
                    f"-A {INBOUND} -p tcp{sel} -m conntrack --ctstate RELATED,ESTABLISHED "
                    f"-j {DIVERT}",
                )
            r.add(table, f"-A {INBOUND} -p tcp{sel} -j {capture}")
        if tproxy:
            mark = cfg.inbound_tproxy_mark
            r.add("mangle", f"-A PREROUTING -p tcp -m mark --mark {mark} -j CONNMARK --save-mark")
            r.add("mangle", f"-A OUTPUT -p tcp -o lo -m mark --mark {mark} -j RETURN")
            for kind, ids in (("uid", uids), ("gid", gids)):
                for owner in ids:
                    r.add(
                        "mangle",
                        f"-A OUTPUT ! -d {localhost} -p tcp -o lo -m owner --{kind}-owner "
                        f"{owner} -j MARK --set-mark {mark + 1}",
                    )
            r.add(
                "mangle", f"-A OUTPUT -p tcp -m connmark --mark {mark} -j CONNMARK --restore-mark"
            )
            r.add("mangle", f"-I {INBOUND} 1 -p tcp -m mark --mark {mark} -j RETURN")
            r.add("mangle", f"-I {INBOUND} 2 -p tcp -s {inbound_passthrough} -i lo -j RETURN")
            r.add("mangle", f"-I {INBOUND} 3 -p tcp -i lo -m mark ! --mark {mark + 1} -j RETURN")

    # Outbound.
    r.add("nat", f"-A OUTPUT -j {OUTPUT}")
    for port in _split(cfg.outbound_ports_exclude):
        r.add("nat", f"-A {OUTPUT} -p tcp --dport {port} -j RETURN")
    r.add("nat", f"-A {OUTPUT} -o lo -s {inbound_passthrough} -j RETURN")
    loopback_included = any(_is_loopback(c) for c in out_include)
    dns = cfg.redirect_dns
    not_dns = " -p tcp ! --dport 53" if dns else ""
    for kind, ids in (("uid", uids), ("gid", gids)):
        for owner in ids:
            if dns and kind == "uid":
                not_ports = f"-m multiport ! --dports 53,{cfg.inbound_tunnel_port}"
            else:
                not_ports = f"! --dport {cfg.inbound_tunnel_port}"
            r.add(
                "nat",
                f"-A {OUTPUT} -o lo ! -d {localhost} -p tcp {not_ports} -m owner "
                f"--{kind}-owner {owner} -j {IN_REDIRECT}",
            )
            if not loopback_included:
                r.add(
                    "nat", f"-A {OUTPUT} -o lo{not_dns} -m owner ! --{kind}-owner {owner} -j RETURN"
                )
            r.add("nat", f"-A {OUTPUT} -m owner --{kind}-owner {owner} -j RETURN")
    groups_in = _split(cfg.outbound_owner_groups_include)
    if groups_in:
        matches = " ".join(f"-m owner ! --gid-owner {g}" for g in groups_in)
        r.add("nat", f"-A {OUTPUT} {matches} -j RETURN")
    for group in _split(cfg.outbound_owner_groups_exclude):
        r.add("nat", f"-A {OUTPUT} -m owner --gid-owner {group} -j RETURN")

    if dns:
        if dns_servers:
            r.add("nat", f"-A {OUTPUT} -j {OUTPUT_DNS}")
        for server in dns_servers:
            d = _host(server)
            r.add("nat", f"-A {OUTPUT_DNS} -p tcp --dport 53 -d {d} -j REDIRECT --to-ports 15053")
            r.add("nat", f"-A {OUTPUT_DNS} -p udp --dport 53 -d {d} -j REDIRECT --to-port 15053")
        # Conntrack zones keep the proxy's and the app's DNS flows apart.
        r.add("raw", f"-A OUTPUT -j {OUTPUT_DNS}")
        for kind, ids in (("uid", uids), ("gid", gids)):
            for owner in ids:
                match = f"-m owner --{kind}-owner {owner}"
                r.add("raw", f"-A {OUTPUT_DNS} -p udp --dport 53 {match} -j CT --zone 1")
                r.add("raw", f"-A {OUTPUT_DNS} -p udp --sport 15053 {match} -j CT --zone 2")
        if dns_servers:
            r.add("raw", f"-A PREROUTING -j {INBOUND}")
        for server in dns_servers:
            d = _host(server)
            r.add("raw", f"-A {OUTPUT_DNS} -p udp --dport 53 -d {d} -j CT --zone 2")
            r.add("raw", f"-A {INBOUND} -p udp --sport 53 -s {d} -j CT --zone 1")

    r.add("nat", f"-A {OUTPUT} -d {localhost} -j RETURN")
    for cidr in out_exclude:
        r.add("nat", f"-A {OUTPUT} -d {cidr} -j RETURN")
    for port in _split(cfg.outbound_ports_include):
        r.add("nat", f"-A {OUTPUT} -p tcp --dport {port} -j {REDIRECT}")
    if out_wildcard:
        r.add("nat", f"-A {OUTPUT} -j {REDIRECT}")
        for nic in virt:
            r.add("nat", f"-I PREROUTING 1 -i {nic} -j {REDIRECT}")
    else:
        for cidr in out_include:
            for nic in virt:
                r.add("nat", f"-I PREROUTING 1 -i {nic} -d {cidr} -j {REDIRECT}")
            r.add("nat", f"-A {OUTPUT} -d {cidr} -j {REDIRECT}")
    return r.render()


def _host(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{address}/{ip.max_prefixlen}"


def render(cfg: CaptureConfig) -> str:
    """The iptables-restore input (IPv4), followed by the ip6tables-restore input if IPv6."""
    out = _family(cfg, v6=False)
    if cfg.enable_ipv6:
        out += _family(cfg, v6=True)
    return out


def render_v4_v6(cfg: CaptureConfig) -> tuple[str, str]:
    """The iptables-restore and ip6tables-restore inputs ("" when IPv6 is off)."""
    return _family(cfg, v6=False), _family(cfg, v6=True) if cfg.enable_ipv6 else ""
