"""Readiness probes as a pod spec declares them (parsing), and the mesh DNS server's answers
(wire format through dnslib, no sockets)."""

from __future__ import annotations

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from pilotfish.mesh.dns import answer
from pilotfish.mesh.probes import Probe, default_probe, parse_probe


def test_probe_kinds_and_kubernetes_defaults() -> None:
    http = parse_probe({"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 2})
    assert (http.kind, http.path, http.port, http.period, http.timeout) == (
        "httpGet",
        "/health",
        8080,
        2.0,
        1.0,
    )
    assert http.failure_threshold == 3 and http.success_threshold == 1 and http.rewritten
    assert parse_probe({"tcpSocket": {}}) == Probe("tcpSocket")
    exe = parse_probe({"exec": {"command": ["cat", "/tmp/ready"]}})
    assert exe.command == ("cat", "/tmp/ready") and not exe.rewritten
    assert default_probe().kind == "tcpSocket" and default_probe().port == 0  # the app's port


def test_probe_round_trips_through_its_kubernetes_form() -> None:
    probe = parse_probe(
        {
            "httpGet": {"path": "/r", "httpHeaders": [{"name": "X-A", "value": "1"}]},
            "initialDelaySeconds": 1,
            "failureThreshold": 2,
        }
    )
    assert parse_probe(probe.to_kubernetes()) == probe


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({}, "exactly one of httpGet, tcpSocket, exec"),
        ({"httpGet": {}, "tcpSocket": {}}, "exactly one"),
        ({"httpGet": {"scheme": "HTTPS"}}, "httpGet.scheme: only HTTP"),
        ({"httpGet": {"port": "http"}}, "httpGet.port: a port number"),
        ({"httpGet": {"host": "example.com"}}, "httpGet.host: not supported"),
        ({"httpGet": {"pth": "/"}}, "httpGet.pth: unknown field"),
        ({"tcpSocket": {"port": 1}, "grpc": {}}, "readinessProbe.grpc: not supported"),
        ({"exec": {"command": "true"}}, "exec.command: a list of strings"),
        ({"tcpSocket": {}, "periodSeconds": 0}, "must be > 0"),
    ],
)
def test_bad_probes_are_refused_by_field(doc: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error.replace(".", r"\.")):
        parse_probe(doc)


RECORDS = {
    "reviews.default.svc.cluster.local": "10.96.0.7",
    "reviews.default.svc": "10.96.0.7",
    "reviews.default": "10.96.0.7",
    "reviews": "10.96.0.7",
}


def ask(name: str, qtype: str = "A") -> DNSRecord:
    out = answer(bytes(DNSRecord.question(name, qtype).pack()), RECORDS)
    assert out is not None
    return DNSRecord.parse(out)


@pytest.mark.parametrize(
    "name", ["reviews", "reviews.default", "reviews.default.svc.cluster.local", "Reviews.Default."]
)
def test_dns_answers_a_service_by_each_of_its_names(name: str) -> None:
    reply = ask(name)
    assert reply.header.rcode == RCODE.NOERROR
    assert [(str(rr.rdata), rr.rtype) for rr in reply.rr] == [("10.96.0.7", QTYPE.A)]


def test_dns_nodata_for_aaaa_of_a_service_and_nxdomain_for_the_rest() -> None:
    aaaa = ask("reviews.default.svc.cluster.local", "AAAA")
    assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr  # the name exists
    for name in ("reviews.other.svc.cluster.local", "example.com", "reviews-v1"):
        reply = ask(name)
        assert reply.header.rcode == RCODE.NXDOMAIN and not reply.rr, name


def test_dns_ignores_responses_and_garbage() -> None:
    reply = DNSRecord.question("reviews").reply()
    assert answer(bytes(reply.pack()), RECORDS) is None
    assert answer(b"\x00\x01", RECORDS) is None
