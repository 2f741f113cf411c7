"""HTTP/1.1 <-> HTTP/2 header translation, preface sniffing and the FlowControl object."""

from __future__ import annotations

from pilotfish.codec import flow_control
from pilotfish.codec.flow_control import FlowControl
from pilotfish.codec.h1_h2 import (
    CLIENT_PREFACE,
    drop_connection_specific,
    join_cookies,
    request_to_h2,
    response_from_h2_upgrade,
    response_to_h2,
    sniff_http2,
    trailers_to_h2,
)
from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders


def test_sniff_decides_on_the_first_twelve_bytes_as_envoy() -> None:
    assert sniff_http2(CLIENT_PREFACE) is True
    assert sniff_http2(b"PRI * HTTP/2") is True
    assert sniff_http2(b"PRI * HT") is None  # read more
    assert sniff_http2(b"") is None
    assert sniff_http2(b"GET / HTTP/1.1\r\n") is False
    assert sniff_http2(b"PRIX") is False
    assert sniff_http2(b"PRI / HTTP/1.1\r\n") is False


def test_connection_specific_headers_never_reach_http2() -> None:
    items = [
        (b"connection", b"keep-alive, x-drop"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-connection", b"keep-alive"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"h2c"),
        (b"host", b"a"),
        (b"te", b"trailers"),
        (b"x-keep", b"1"),
    ]
    assert drop_connection_specific(items) == [(b"te", b"trailers"), (b"x-keep", b"1")]
    assert drop_connection_specific([(b"te", b"gzip, trailers")]) == []
    assert drop_connection_specific([(b"te", b"Trailers")]) == [(b"te", b"Trailers")]


def test_request_pseudo_headers_first_and_host_as_authority() -> None:
    req = RequestHeaders(
        b"POST", b"/a?b", b"svc:80", [(b"host", b"svc:80"), (b"x", b"1")], scheme=b"https"
    )
    assert request_to_h2(req) == [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"svc:80"),
        (b":path", b"/a?b"),
        (b"x", b"1"),
    ]


def test_connect_carries_only_method_and_authority() -> None:
    assert request_to_h2(RequestHeaders(b"CONNECT", b"", b"db:5432")) == [
        (b":method", b"CONNECT"),
        (b":authority", b"db:5432"),
    ]


def test_upgrade_request_becomes_extended_connect_and_back() -> None:
    req = RequestHeaders(
        b"GET",
        b"/ws",
        b"a",
        [
            (b"connection", b"upgrade"),
            (b"upgrade", b"websocket"),
            (b"content-length", b"0"),
            (b"sec-websocket-key", b"k"),
        ],
    )
    assert request_to_h2(req) == [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"http"),
        (b":authority", b"a"),
        (b":path", b"/ws"),
        (b"sec-websocket-key", b"k"),
    ]
    ok = ResponseHeaders(200, [(b"content-length", b"0"), (b"x", b"1")])
    switched = response_from_h2_upgrade(ok, b"websocket")
    assert switched.status == 101
    assert switched.items == [(b"x", b"1"), (b"upgrade", b"websocket"), (b"connection", b"upgrade")]
    refused = ResponseHeaders(403, [(b"x", b"1")])
    assert response_from_h2_upgrade(refused, b"websocket") is refused


def test_response_to_h2() -> None:
    resp = ResponseHeaders(200, [(b"connection", b"close"), (b"content-length", b"2")])
    assert response_to_h2(resp) == [(b":status", b"200"), (b"content-length", b"2")]
    upgraded = ResponseHeaders(101, [(b"upgrade", b"websocket"), (b"connection", b"upgrade")])
    assert response_to_h2(upgraded, upgrade=True) == [(b":status", b"200")]


def test_trailers_to_h2_drop_pseudo_and_connection_specific() -> None:
    trailers = HeaderMap([(b"grpc-status", b"0"), (b":status", b"200"), (b"connection", b"x")])
    assert trailers_to_h2(trailers) == [(b"grpc-status", b"0")]


def test_cookie_crumbs_join_in_the_first_ones_place() -> None:
    items = [(b"a", b"1"), (b"cookie", b"x=1"), (b"b", b"2"), (b"cookie", b"y=2")]
    assert join_cookies(items) == [(b"a", b"1"), (b"cookie", b"x=1; y=2"), (b"b", b"2")]
    single = [(b"cookie", b"x=1")]
    assert join_cookies(single) is single


def test_flow_control_named_reasons() -> None:
    fc = FlowControl()
    assert not fc.paused and repr(fc) == "FlowControl(running)"
    assert fc.pause(flow_control.UPSTREAM_BACKPRESSURE) is True  # running -> paused: act
    assert fc.pause(flow_control.PEER_WINDOW) is False  # already paused
    assert fc.names() == ["upstream_backpressure", "peer_window"]
    assert fc.resume(flow_control.UPSTREAM_BACKPRESSURE) is False  # another reason holds it
    assert fc.resume(flow_control.PIPELINE) is False  # not a reason it had
    assert fc.resume(flow_control.PEER_WINDOW) is True  # last reason gone: resume
    assert not fc.paused
