"""The pure parts of the shipped BookInfo apps: B3 re-injection as OpenTelemetry's
B3MultiFormat does it (productpage), the forwarded header set, the session cookie, reviews'
JSON and the page classifier."""

from __future__ import annotations

import json
from email.message import Message

import pytest

from pilotfish.mesh.bookinfo.common import SERVICE_HEADERS_TO_PROPAGATE, b3_multi_headers
from pilotfish.mesh.bookinfo.productpage import (
    PRODUCTPAGE_HEADERS_TO_PROPAGATE,
    PRODUCTS,
    decode_session,
    encode_session,
    forward_headers,
    render_productpage,
    reviews_version_in_page,
)
from pilotfish.mesh.bookinfo.reviews import ReviewsConfig, reviews_json

T16, T32, S = "463ac35c9f6413ad", "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"


def msg(**headers: str) -> Message:
    m = Message()
    for k, v in headers.items():
        m[k.replace("_", "-")] = v
    return m


@pytest.mark.parametrize(
    ("incoming", "expected"),
    [
        ({}, {}),
        (
            {"x_b3_traceid": T16, "x_b3_spanid": S},
            {"x-b3-traceid": "0" * 16 + T16, "x-b3-spanid": S, "x-b3-sampled": "0"},
        ),
        (
            {"x_b3_traceid": T32.upper(), "x_b3_spanid": S, "x_b3_sampled": "true"},
            {"x-b3-traceid": T32, "x-b3-spanid": S, "x-b3-sampled": "1"},
        ),
        (  # debug flag implies sampled; flags and parent are not sent on
            {"x_b3_traceid": T32, "x_b3_spanid": S, "x_b3_flags": "1", "x_b3_parentspanid": S},
            {"x-b3-traceid": T32, "x-b3-spanid": S, "x-b3-sampled": "1"},
        ),
        ({"x_b3_traceid": "xyz", "x_b3_spanid": S}, {}),
        ({"x_b3_traceid": T32, "x_b3_spanid": S + "0"}, {}),
        ({"x_b3_traceid": T32}, {}),
        (  # single header: preferred, two fields mean "deferred", recorded as sampled
            {"b3": f"{T32}-{S}", "x_b3_traceid": T16, "x_b3_spanid": S},
            {"x-b3-traceid": T32, "x-b3-spanid": S, "x-b3-sampled": "1"},
        ),
        ({"b3": f"{T32}-{S}-0"}, {"x-b3-traceid": T32, "x-b3-spanid": S, "x-b3-sampled": "0"}),
        ({"b3": "1"}, {}),  # sampling only: no context to send
        ({"b3": f"{T32}-{S}-1-{S}-extra"}, {}),
    ],
)
def test_b3_multi_headers(incoming: dict[str, str], expected: dict[str, str]) -> None:
    assert b3_multi_headers(msg(**incoming)) == expected


def test_forward_headers_order_and_content() -> None:
    incoming = msg(
        x_request_id="r",
        x_b3_traceid=T32,
        x_b3_spanid=S,
        traceparent="tp",
        end_user="mallory",
        cookie="c=1",
        foo="bar",
    )
    out = forward_headers(incoming, "jason")
    assert list(out) == [
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "end-user",
        "x-request-id",
        "traceparent",
        "cookie",
    ]
    assert out["end-user"] == "jason"
    assert "end-user" not in forward_headers(incoming, None)


def test_propagation_lists_match_the_originals() -> None:
    # productpage.py's incoming_headers (x-b3-* through OpenTelemetry instead)
    assert PRODUCTPAGE_HEADERS_TO_PROPAGATE == (
        "x-request-id", "x-ot-span-context", "x-datadog-trace-id", "x-datadog-parent-id",
        "x-datadog-sampling-priority", "traceparent", "tracestate", "x-cloud-trace-context",
        "grpc-trace-bin", "sw8", "user-agent", "cookie", "authorization", "jwt",
    )  # fmt: skip
    # reviews' headers_to_propagate and details' incoming_headers
    assert set(SERVICE_HEADERS_TO_PROPAGATE) == set(PRODUCTPAGE_HEADERS_TO_PROPAGATE) | {
        "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
        "end-user",
    }  # fmt: skip
    assert "b3" not in SERVICE_HEADERS_TO_PROPAGATE


def test_session_cookie_round_trip_and_tamper() -> None:
    value = encode_session({"user": "jason"})
    assert decode_session(value) == {"user": "jason"}
    payload, sig = value.split(".")
    assert decode_session(payload + "." + sig[:-2] + "AA") == {}
    assert decode_session("garbage") == {}


def _config(version: str, enabled: bool, color: str = "black") -> ReviewsConfig:
    return ReviewsConfig(version, enabled, color, "http://ratings:9080/ratings", "pod", "null")


def test_reviews_json_shapes() -> None:
    v1 = json.loads(reviews_json(_config("v1", False), "0", None))
    assert v1["id"] == "0" and v1["podname"] == "pod" and v1["clustername"] == "null"
    assert all("rating" not in r for r in v1["reviews"])
    v3 = json.loads(reviews_json(_config("v3", True, "red"), "0", (5, -1)))
    assert v3["reviews"][0]["rating"] == {"stars": 5, "color": "red"}
    assert v3["reviews"][1]["rating"] == {"error": "Ratings service is currently unavailable"}
    down = json.loads(reviews_json(_config("v2", True), "0", None))
    assert {r["rating"]["error"] for r in down["reviews"]} == {
        "Ratings service is currently unavailable"
    }


@pytest.mark.parametrize(
    ("version", "enabled", "color", "expected"),
    [("v1", False, "black", "v1"), ("v2", True, "black", "v2"), ("v3", True, "red", "v3")],
)
def test_reviews_version_in_page(version: str, enabled: bool, color: str, expected: str) -> None:
    answer = json.loads(reviews_json(_config(version, enabled, color), "0", (5, 4)))
    page = render_productpage(PRODUCTS[0], "", (200, {}), (200, answer))
    assert reviews_version_in_page(page) == expected
    failed = render_productpage(PRODUCTS[0], "", (200, {}), (500, {"error": "x"}))
    assert reviews_version_in_page(failed) is None


def test_reviews_config_defaults_per_version(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ENABLE_RATINGS", "STAR_COLOR", "HOSTNAME", "CLUSTER_NAME", "SERVICES_DOMAIN"):
        monkeypatch.delenv(var, raising=False)
    for version, enabled, color in (
        ("v1", False, "black"),
        ("v2", True, "black"),
        ("v3", True, "red"),
    ):
        monkeypatch.setenv("SERVICE_VERSION", version)
        config = ReviewsConfig.from_env()
        assert (config.ratings_enabled, config.star_color) == (enabled, color)
        assert config.ratings_timeout == (10.0 if color == "black" else 2.5)
        assert config.podname == f"reviews-{version}"
    monkeypatch.setenv("ENABLE_RATINGS", "False")
    monkeypatch.setenv("SERVICES_DOMAIN", "default.svc.cluster.local")
    config = ReviewsConfig.from_env()
    assert not config.ratings_enabled
    assert config.ratings_service == "http://ratings.default.svc.cluster.local:9080/ratings"
