"""pilotfish's istio-iptables rules against Istio's goldens (istio-iptables dry-run output).

Normalised: the goldens are istio-iptables' dry-run log, which also lists the `iptables-save` /
`ip6tables-save` commands it runs around the restore (to check for existing rules); those
lines are dropped. Everything else (order of tables, chains and rules) must match exactly.

Each golden's options are not stored with it (they live in Istio's Go test); they are read off
the golden's name and contents and written here as CaptureConfigs.
"""

from typing import Any

import pytest
from tests.support.istio_data import IPTABLES_GOLDENS

from pilotfish.mesh.capture.iptables import CaptureConfig, render

GOLDENS = IPTABLES_GOLDENS

DNS: dict[str, Any] = {"redirect_dns": True, "dns_servers_v4": ["127.0.0.53"]}
UID_GID: dict[str, Any] = {"proxy_uid": "3,4", "proxy_gid": "1,2"}
RANGES: dict[str, Any] = {
    "outbound_ip_ranges_exclude": "1.1.0.0/16",
    "outbound_ip_ranges_include": "9.9.0.0/16",
}
V6_PORTS: dict[str, Any] = {"enable_ipv6": True, "inbound_ports_include": "4000,5000"}
V6_VIRT: dict[str, Any] = {**V6_PORTS, "kube_virt_interfaces": "eth0,eth1"}
V6_NETS: dict[str, Any] = {
    "outbound_ip_ranges_include": "2001:db8::/32",
    "outbound_ip_ranges_exclude": "2001:db8::/32",
}

CASES: dict[str, CaptureConfig] = {
    "empty": CaptureConfig(),
    "basic-exclude-nic": CaptureConfig(exclude_interfaces="not-istio-nic"),
    "drop-invalid": CaptureConfig(drop_invalid=True),
    "host-ipv4-loopback-cidr": CaptureConfig(host_ipv4_loopback_cidr="127.0.0.1/8"),
    "inbound-ports-include": CaptureConfig(inbound_ports_include="32000,31000"),
    "inbound-ports-wildcard": CaptureConfig(inbound_ports_include="*"),
    "inbound-ports-tproxy": CaptureConfig(
        inbound_intercept_mode="TPROXY", inbound_ports_include="32000,31000"
    ),
    "inbound-ports-wildcard-tproxy": CaptureConfig(
        inbound_intercept_mode="TPROXY", inbound_ports_include="*"
    ),
    "ipnets": CaptureConfig(outbound_ip_ranges_include="10.0.0.0/8"),
    "ipnets-with-kube-virt-interfaces": CaptureConfig(
        outbound_ip_ranges_include="10.0.0.0/8", kube_virt_interfaces="eth1,eth2"
    ),
    "kube-virt-interfaces": CaptureConfig(
        outbound_ip_ranges_include="*", kube_virt_interfaces="eth1,eth2"
    ),
    "outbound-ports-include": CaptureConfig(outbound_ports_include="32000,31000"),
    "outbound-owner-groups": CaptureConfig(outbound_owner_groups_include="java,202"),
    "outbound-owner-groups-exclude": CaptureConfig(outbound_owner_groups_exclude="888,ftp"),
    "ip-range": CaptureConfig(**DNS, **UID_GID, **RANGES),
    "dns-uid-gid": CaptureConfig(
        **DNS, **UID_GID, enable_ipv6=True, dns_servers_v6=["::127.0.0.53"]
    ),
    "loopback-outbound-iprange": CaptureConfig(
        **DNS, **UID_GID, outbound_ip_ranges_include="127.1.2.3/32"
    ),
    "tproxy": CaptureConfig(
        **DNS,
        **RANGES,
        enable_ipv6=True,
        inbound_intercept_mode="TPROXY",
        inbound_ports_include="*",
        exclude_interfaces="not-istio-nic",
    ),
    "ipv6-empty-inbound-ports": CaptureConfig(enable_ipv6=True),
    "ipv6-inbound-ports": CaptureConfig(**V6_PORTS),
    "ipv6-virt-interfaces": CaptureConfig(**V6_VIRT),
    "ipv6-ipnets": CaptureConfig(**V6_VIRT, **V6_NETS),
    "ipv6-uid-gid": CaptureConfig(**V6_VIRT, **V6_NETS, **UID_GID),
    "ipv6-outbound-ports": CaptureConfig(enable_ipv6=True, outbound_ports_include="32000,31000"),
    # Despite the names, these goldens carry no DNS rules: the tests' DNS options do not apply.
    "ipv6-dns-uid-gid": CaptureConfig(enable_ipv6=True, **UID_GID),
    "ipv6-dns-outbound-owner-groups": CaptureConfig(
        enable_ipv6=True, outbound_owner_groups_include="java,202"
    ),
    "ipv6-dns-outbound-owner-groups-exclude": CaptureConfig(
        enable_ipv6=True, outbound_owner_groups_exclude="888,ftp"
    ),
}

# Goldens not compared, with the reason.
UNSUPPORTED: dict[str, str] = {}


def _normalise(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.strip() and line not in ("iptables-save", "ip6tables-save")
    ]


def test_every_golden_is_compared_or_listed() -> None:
    names = {p.name.removesuffix(".golden") for p in GOLDENS.glob("*.golden")}
    assert names, GOLDENS
    assert names == set(CASES) | set(UNSUPPORTED)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rules_match_istio_golden(name: str) -> None:
    golden = _normalise((GOLDENS / f"{name}.golden").read_text())
    assert _normalise(render(CASES[name])) == golden


def test_default_sidecar_rules() -> None:
    """What istio-init runs in an injected pod: -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*'
    -x "" -b '*' -d 15090,15021,15020 (no golden has these exact options)."""
    rules = render(
        CaptureConfig(
            inbound_ports_include="*",
            inbound_ports_exclude="15090,15021,15020",
            outbound_ip_ranges_include="*",
        )
    ).splitlines()
    inbound = [r for r in rules if r.startswith("-A ISTIO_INBOUND")]
    assert inbound == [
        "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
    ]
    assert "-A PREROUTING -p tcp -j ISTIO_INBOUND" in rules
    assert rules[-2:] == ["-A ISTIO_OUTPUT -j ISTIO_REDIRECT", "COMMIT"]
    assert "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in rules
    assert "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN" in rules
