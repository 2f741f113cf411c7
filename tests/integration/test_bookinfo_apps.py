"""The shipped BookInfo apps (pilotfish.mesh.bookinfo) as processes, wired directly to each
other (or to recording stubs) by their environment variables, checked against what Istio's
sample does on the wire: paths and JSON, the page's contents per reviews version, login and
``end-user``, trace-header propagation, ``HTTP_PROXY``, and the error texts on failures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.bookinfo_apps import BookinfoApp, RecordingStub, Reply, http_request
from tests.support.loopback import Blackhole, RefusedPort

from pilotfish.mesh.bookinfo.productpage import reviews_version_in_page

DETAILS_JSON = (
    '{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,'
    '"publisher":"PublisherA","language":"English","ISBN-10":"1234567890",'
    '"ISBN-13":"123-1234567890"}'
)
REVIEW1 = "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"
REVIEW2 = (
    "Absolutely fun and entertaining. The play lacks thematic depth when compared to other "
    "plays by Shakespeare."
)
REVIEWS_V1_JSON = json.dumps(
    {
        "id": "0",
        "podname": "stub-reviews",
        "clustername": "null",
        "reviews": [
            {"reviewer": "Reviewer1", "text": REVIEW1},
            {"reviewer": "Reviewer2", "text": REVIEW2},
        ],
    }
)
STAR = 'id="glyphicon glyphicon-star"'

# An incoming request as Istio's ingress gateway would send it, with every tracing header.
TRACE_ID16 = "463ac35c9f6413ad"
SPAN_ID = "a2fb4a1d1a96d312"
INCOMING_TRACE = {
    "x-request-id": "4a1f9e9c-5d5e-4a2b-9d59-2a3f0b7c1d11",
    "x-b3-traceid": TRACE_ID16,
    "x-b3-spanid": SPAN_ID,
    "x-b3-parentspanid": "0020000000000001",
    "x-b3-sampled": "1",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "congo=t61rcWkgMzE",
    "x-ot-span-context": "ot-ctx",
    "x-datadog-trace-id": "1234",
    "x-datadog-parent-id": "5678",
    "x-datadog-sampling-priority": "1",
    "x-cloud-trace-context": "105445aa7843bc8bf206b12000100000/1;o=1",
    "sw8": "1-abc-def-0-svc-inst-ep-host",
    "user-agent": "bookinfo-test/1.0",
    "authorization": "Bearer token-1",
    "jwt": "jwt-1",
}
# productpage copies these verbatim (productpage.py getForwardHeaders' list)...
PRODUCTPAGE_VERBATIM = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "x-cloud-trace-context",
    "sw8",
    "user-agent",
    "authorization",
    "jwt",
)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bookinfo-logs")


@pytest.fixture(scope="module")
def details(log_dir: Path) -> Iterator[BookinfoApp]:
    with BookinfoApp("details", log_dir=log_dir) as app:
        yield app


@pytest.fixture(scope="module")
def ratings(log_dir: Path) -> Iterator[BookinfoApp]:
    with BookinfoApp("ratings", log_dir=log_dir) as app:
        yield app


@pytest.fixture(scope="module")
def reviews(ratings: BookinfoApp, log_dir: Path) -> Iterator[dict[str, BookinfoApp]]:
    """reviews v1, v2 and v3, each with its pod name, v2 and v3 calling the real ratings."""
    apps: dict[str, BookinfoApp] = {}
    try:
        for version in ("v1", "v2", "v3"):
            env = {
                "SERVICE_VERSION": version,
                "HOSTNAME": f"reviews-{version}-pod",
                "RATINGS_HOSTNAME": "127.0.0.1",
                "RATINGS_SERVICE_PORT": str(ratings.port),
            }
            apps[version] = BookinfoApp("reviews", env, log_dir).start()
        yield apps
    finally:
        for app in apps.values():
            app.stop()


def productpage_env(details_port: int, reviews_port: int, **extra: str) -> dict[str, str]:
    return {
        "DETAILS_HOSTNAME": "127.0.0.1",
        "DETAILS_SERVICE_PORT": str(details_port),
        "REVIEWS_HOSTNAME": "127.0.0.1",
        "REVIEWS_SERVICE_PORT": str(reviews_port),
        **extra,
    }


def login(page: BookinfoApp, user: str) -> str:
    """POST /login like the page's form; the cookie to send afterwards."""
    resp = http_request(
        page.url + "/login",
        {"content-type": "application/x-www-form-urlencoded", "referer": page.url + "/productpage"},
        method="POST",
        body=f"username={user}&passwd=secret".encode(),
    )
    assert resp.status == 302
    assert resp.headers["location"] == page.url + "/productpage"
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("session=")
    return cookie.split(";")[0]


# -- each service's own answers ---------------------------------------------------------------


def test_details_answers_like_the_original(details: BookinfoApp) -> None:
    resp = http_request(details.url + "/details/0")
    assert resp.status == 200
    assert resp.headers.get_content_type() == "application/json"
    assert resp.text == DETAILS_JSON
    assert json.loads(http_request(details.url + "/details/7").body)["id"] == 7
    bad = http_request(details.url + "/details/abc")
    assert (bad.status, bad.text) == (400, '{"error":"please provide numeric product id"}')
    health = http_request(details.url + "/health")
    assert (health.status, health.text) == (200, '{"status":"Details is healthy"}')


def test_ratings_answers_like_the_original(ratings: BookinfoApp) -> None:
    resp = http_request(ratings.url + "/ratings/0")
    assert (resp.status, resp.text) == (200, '{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}')
    bad = http_request(ratings.url + "/ratings/x")
    assert (bad.status, bad.text) == (400, '{"error":"please provide numeric product ID"}')
    health = http_request(ratings.url + "/health")
    assert (health.status, health.text) == (200, '{"status":"Ratings is healthy"}')


@pytest.mark.parametrize(
    ("version", "rating"),
    [
        ("v1", None),
        ("v2", ({"stars": 5, "color": "black"}, {"stars": 4, "color": "black"})),
        ("v3", ({"stars": 5, "color": "red"}, {"stars": 4, "color": "red"})),
    ],
)
def test_reviews_answers_per_version(
    reviews: dict[str, BookinfoApp], version: str, rating: tuple[dict[str, object], ...] | None
) -> None:
    resp = http_request(reviews[version].url + "/reviews/0")
    assert resp.status == 200
    # Built by string concatenation in the original: this exact start and spacing.
    assert resp.text.startswith(
        f'{{"id": "0","podname": "reviews-{version}-pod","clustername": "null","reviews": [{{'
        '  "reviewer": "Reviewer1",  "text": '
    )
    answer = json.loads(resp.body)
    assert [r["reviewer"] for r in answer["reviews"]] == ["Reviewer1", "Reviewer2"]
    assert [r["text"] for r in answer["reviews"]] == [REVIEW1, REVIEW2]
    if rating is None:
        assert all("rating" not in r for r in answer["reviews"])
    else:
        assert tuple(r["rating"] for r in answer["reviews"]) == rating
    assert http_request(reviews[version].url + "/reviews/x").status == 404
    assert http_request(reviews[version].url + "/health").text == '{"status": "Reviews is healthy"}'


# -- the page ---------------------------------------------------------------------------------


def test_page_renders_title_details_and_reviews(
    details: BookinfoApp, reviews: dict[str, BookinfoApp], log_dir: Path
) -> None:
    env = productpage_env(details.port, reviews["v1"].port)
    with BookinfoApp("productpage", env, log_dir) as page:
        resp = http_request(page.url + "/productpage")
        assert resp.status == 200
        assert resp.headers.get_content_type() == "text/html"
        text = resp.text
        assert "<title>Simple Bookstore App</title>" in text
        assert "The Comedy of Errors" in text
        assert "Book Details" in text
        for value in ("1234567890", "PublisherA", "200", "paperback", "English"):
            assert f"<td>{value}</td>" in text
        assert "Book Reviews" in text
        assert "Reviewer1" in text and "Reviewer2" in text
        assert "slapstick humour is refreshing!" in text
        assert "Reviews served by: reviews-v1-pod" in text
        assert "Error fetching" not in text
        assert http_request(page.url + "/health").text == "Product page is healthy"
        index = http_request(page.url + "/")
        assert index.status == 200 and "simple bookstore application" in index.text


@pytest.mark.parametrize(("version", "color"), [("v1", None), ("v2", "black"), ("v3", "red")])
def test_stars_tell_the_reviews_version(
    details: BookinfoApp,
    reviews: dict[str, BookinfoApp],
    log_dir: Path,
    version: str,
    color: str | None,
) -> None:
    env = productpage_env(details.port, reviews[version].port)
    with BookinfoApp("productpage", env, log_dir) as page:
        text = http_request(page.url + "/productpage").text
    assert f"Reviews served by: reviews-{version}-pod" in text
    if color is None:
        assert STAR not in text
        assert "gap-x-1 text-" not in text
    else:
        assert text.count(STAR) == 5 + 4  # Reviewer1 5 stars, Reviewer2 4 stars
        assert text.count(f'class="flex gap-x-1 text-{color}-500"') == 2
        other = "red" if color == "black" else "black"
        assert f"text-{other}-500" not in text
    assert reviews_version_in_page(text) == version


# -- login and end-user -----------------------------------------------------------------------


def test_login_sends_end_user_downstream_and_logout_stops_it(
    details: BookinfoApp, log_dir: Path
) -> None:
    with RecordingStub({"/reviews/0": REVIEWS_V1_JSON}) as stub:
        env = productpage_env(details.port, stub.port)
        with BookinfoApp("productpage", env, log_dir) as page:
            # Not logged in: no end-user, even when the client sends one (productpage only
            # sends the session's user).
            http_request(page.url + "/productpage", {"end-user": "mallory"})
            (anon,) = stub.recorded("/reviews/0")
            assert anon.headers.get("end-user") is None

            cookie = login(page, "jason")
            stub.clear()
            resp = http_request(page.url + "/productpage", {"cookie": cookie})
            assert resp.status == 200
            assert ">jason<" in resp.text and "Sign out" in resp.text
            (call,) = stub.recorded("/reviews/0")
            assert call.headers.get_all("end-user") == ["jason"]
            assert call.headers.get("cookie") == cookie  # cookie is propagated too

            # The API calls carry it as well.
            stub.clear()
            http_request(page.url + "/api/v1/products/0/reviews", {"cookie": cookie})
            assert stub.recorded("/reviews/0")[0].headers.get("end-user") == "jason"

            # A forged cookie is not a login.
            stub.clear()
            forged = cookie.rsplit(".", 1)[0] + ".AAAA"
            http_request(page.url + "/productpage", {"cookie": forged})
            assert stub.recorded("/reviews/0")[0].headers.get("end-user") is None

            out = http_request(page.url + "/logout", {"cookie": cookie, "referer": "/productpage"})
            assert out.status == 302 and out.headers["location"] == "/productpage"
            assert out.headers["set-cookie"].startswith("session=;")
            stub.clear()
            http_request(page.url + "/productpage")
            assert stub.recorded("/reviews/0")[0].headers.get("end-user") is None


def test_end_user_reaches_ratings_through_reviews(details: BookinfoApp, log_dir: Path) -> None:
    with RecordingStub({"/ratings/0": '{"id":0,"ratings":{"Reviewer1":3,"Reviewer2":1}}'}) as rs:
        renv = {
            "SERVICE_VERSION": "v2",
            "RATINGS_HOSTNAME": "127.0.0.1",
            "RATINGS_SERVICE_PORT": str(rs.port),
        }
        with (
            BookinfoApp("reviews", renv, log_dir) as rev,
            BookinfoApp("productpage", productpage_env(details.port, rev.port), log_dir) as page,
        ):
            cookie = login(page, "jason")
            text = http_request(page.url + "/productpage", {"cookie": cookie}).text
            assert text.count(STAR) == 3 + 1
            (call,) = rs.recorded("/ratings/0")
            assert call.headers.get("end-user") == "jason"
            assert call.headers.get("accept") == "application/json"


# -- trace headers ----------------------------------------------------------------------------


def test_trace_headers_propagated_to_details_reviews_and_ratings(log_dir: Path) -> None:
    with (
        RecordingStub({"/details/0": DETAILS_JSON}) as details_stub,
        RecordingStub({"/ratings/0": '{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}'}) as rs,
    ):
        renv = {
            "SERVICE_VERSION": "v3",
            "RATINGS_HOSTNAME": "127.0.0.1",
            "RATINGS_SERVICE_PORT": str(rs.port),
        }
        with (
            BookinfoApp("reviews", renv, log_dir) as rev,
            BookinfoApp(
                "productpage", productpage_env(details_stub.port, rev.port), log_dir
            ) as page,
        ):
            cookie = login(page, "jason")
            text = http_request(
                page.url + "/productpage", {**INCOMING_TRACE, "cookie": cookie}
            ).text
            assert reviews_version_in_page(text) == "v3"
    (to_details,) = details_stub.recorded("/details/0")
    (to_ratings,) = rs.recorded("/ratings/0")
    # productpage -> details (and the same headers to reviews, seen again at ratings)
    h = to_details.headers
    for name in PRODUCTPAGE_VERBATIM:
        assert h.get_all(name) == [INCOMING_TRACE[name]], name
    # B3 goes through OpenTelemetry's B3MultiFormat in the original: the 64-bit trace id comes
    # out padded to 128 bits, the sampling decision as 1/0, no parent span id.
    assert h.get("x-b3-traceid") == "0" * 16 + TRACE_ID16
    assert h.get("x-b3-spanid") == SPAN_ID
    assert h.get("x-b3-sampled") == "1"
    assert h.get("x-b3-parentspanid") is None
    assert h.get("end-user") == "jason"
    assert h.get("cookie") == cookie
    # reviews -> ratings: reviews copies its own list verbatim, x-b3-* included.
    r = to_ratings.headers
    for name in PRODUCTPAGE_VERBATIM:
        assert r.get(name) == INCOMING_TRACE[name], name
    assert r.get("x-b3-traceid") == "0" * 16 + TRACE_ID16
    assert r.get("x-b3-spanid") == SPAN_ID
    assert r.get("x-b3-sampled") == "1"
    assert r.get("end-user") == "jason"
    assert r.get("cookie") == cookie


def test_single_b3_header_becomes_multi_headers(details: BookinfoApp, log_dir: Path) -> None:
    trace = "80f198ee56343ba864fe8b2a57d3eff7"
    with (
        RecordingStub({"/reviews/0": REVIEWS_V1_JSON}) as stub,
        BookinfoApp("productpage", productpage_env(details.port, stub.port), log_dir) as page,
    ):
        http_request(
            page.url + "/productpage",
            {"b3": f"{trace}-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90", "x-request-id": "r-1"},
        )
    (call,) = stub.recorded("/reviews/0")
    assert call.headers.get("b3") is None
    assert call.headers.get("x-b3-traceid") == trace
    assert call.headers.get("x-b3-spanid") == "e457b5a2e4d86bd1"
    assert call.headers.get("x-b3-sampled") == "1"  # debug "d" counts as sampled
    assert call.headers.get("x-request-id") == "r-1"


# -- HTTP_PROXY -------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy"])
def test_http_proxy_gets_absolute_form_requests(log_dir: Path, variable: str) -> None:
    answers = {"/details/0": DETAILS_JSON, "/reviews/0": REVIEWS_V1_JSON}
    with RecordingStub(answers) as proxy:
        # Hostnames left at their defaults: "details" and "reviews" need not resolve.
        env = {variable: proxy.url}
        with BookinfoApp("productpage", env, log_dir) as page:
            text = http_request(page.url + "/productpage", {"x-request-id": "via-proxy"}).text
    assert [r.target for r in proxy.recorded()] == [
        "http://details:9080/details/0",
        "http://reviews:9080/reviews/0",
    ]
    first, second = proxy.recorded()
    assert first.headers.get("host") == "details:9080"
    assert second.headers.get("host") == "reviews:9080"
    assert first.headers.get("x-request-id") == "via-proxy"
    assert "<td>PublisherA</td>" in text and "Reviews served by: stub-reviews" in text


def test_no_proxy_exempts_a_host(details: BookinfoApp, log_dir: Path) -> None:
    with RecordingStub({"/reviews/0": REVIEWS_V1_JSON}) as proxy:
        env = {
            "HTTP_PROXY": proxy.url,
            "NO_PROXY": "127.0.0.1",
            "DETAILS_HOSTNAME": "127.0.0.1",
            "DETAILS_SERVICE_PORT": str(details.port),
        }
        with BookinfoApp("productpage", env, log_dir) as page:
            text = http_request(page.url + "/productpage").text
    assert [r.target for r in proxy.recorded()] == ["http://reviews:9080/reviews/0"]
    assert "<td>PublisherA</td>" in text  # details reached directly


def test_reviews_calls_ratings_through_http_proxy(log_dir: Path) -> None:
    with RecordingStub({"/ratings/0": '{"id":0,"ratings":{"Reviewer1":2,"Reviewer2":2}}'}) as proxy:
        env = {"SERVICE_VERSION": "v2", "HTTP_PROXY": proxy.url}
        with BookinfoApp("reviews", env, log_dir) as rev:
            answer = json.loads(http_request(rev.url + "/reviews/0").body)
    assert [r.target for r in proxy.recorded()] == ["http://ratings:9080/ratings/0"]
    assert answer["reviews"][0]["rating"] == {"stars": 2, "color": "black"}


# -- failures ---------------------------------------------------------------------------------


def test_details_down_renders_the_error_text(
    reviews: dict[str, BookinfoApp], log_dir: Path
) -> None:
    refused = RefusedPort()
    try:
        env = productpage_env(refused.port, reviews["v2"].port)
        with BookinfoApp("productpage", env, log_dir) as page:
            resp = http_request(page.url + "/productpage")
            api = http_request(page.url + "/api/v1/products/0")
    finally:
        refused.close()
    assert resp.status == 200
    assert "Error fetching product details" in resp.text
    assert "Sorry, product details are currently unavailable for this book." in resp.text
    assert "Book Details" not in resp.text
    assert reviews_version_in_page(resp.text) == "v2"  # the rest of the page still renders
    assert api.status == 500
    assert json.loads(api.body) == {
        "error": "Sorry, product details are currently unavailable for this book."
    }


@pytest.mark.parametrize("failure", ["refused", "503"])
def test_ratings_down_renders_ratings_unavailable(
    details: BookinfoApp, log_dir: Path, failure: str
) -> None:
    refused = RefusedPort()
    stub = RecordingStub({"/ratings/0": Reply(503, b'{"error":"Service unavailable"}')})
    try:
        with stub:
            port = refused.port if failure == "refused" else stub.port
            renv = {
                "SERVICE_VERSION": "v3",
                "RATINGS_HOSTNAME": "127.0.0.1",
                "RATINGS_SERVICE_PORT": str(port),
            }
            with (
                BookinfoApp("reviews", renv, log_dir) as rev,
                BookinfoApp(
                    "productpage", productpage_env(details.port, rev.port), log_dir
                ) as page,
            ):
                answer = json.loads(http_request(rev.url + "/reviews/0").body)
                text = http_request(page.url + "/productpage").text
    finally:
        refused.close()
    unavailable = {"error": "Ratings service is currently unavailable"}
    assert [r["rating"] for r in answer["reviews"]] == [unavailable, unavailable]
    assert text.count('<p class="text-red-500">Ratings service is currently unavailable</p>') == 2
    assert STAR not in text
    assert "Book Reviews" in text and "Reviewer1" in text


def test_reviews_down_renders_the_error_text_after_two_tries(
    details: BookinfoApp, log_dir: Path
) -> None:
    with (
        RecordingStub({"/reviews/0": Reply(503, b"upstream connect error")}) as stub,
        BookinfoApp("productpage", productpage_env(details.port, stub.port), log_dir) as page,
    ):
        text = http_request(page.url + "/productpage").text
        api = http_request(page.url + "/api/v1/products/0/reviews")
    assert "Error fetching product reviews" in text
    assert "Sorry, product reviews are currently unavailable for this book." in text
    assert "<td>PublisherA</td>" in text
    assert len(stub.recorded("/reviews/0")) == 2 + 2  # the original tries reviews twice
    assert api.status == 503
    assert json.loads(api.body) == {
        "error": "Sorry, product reviews are currently unavailable for this book."
    }


# -- API and lifecycle ------------------------------------------------------------------------


def test_api_routes(
    details: BookinfoApp, ratings: BookinfoApp, reviews: dict[str, BookinfoApp], log_dir: Path
) -> None:
    env = productpage_env(
        details.port,
        reviews["v2"].port,
        RATINGS_HOSTNAME="127.0.0.1",
        RATINGS_SERVICE_PORT=str(ratings.port),
    )
    with BookinfoApp("productpage", env, log_dir) as page:
        products = http_request(page.url + "/api/v1/products")
        product = http_request(page.url + "/api/v1/products/0")
        revs = http_request(page.url + "/api/v1/products/0/reviews")
        rats = http_request(page.url + "/api/v1/products/0/ratings")
        metrics = http_request(page.url + "/metrics")
    assert products.status == 200 and products.headers.get_content_type() == "application/json"
    (book,) = json.loads(products.body)
    assert (book["id"], book["title"]) == (0, "The Comedy of Errors")
    assert (product.status, json.loads(product.body)) == (200, json.loads(DETAILS_JSON))
    assert json.loads(revs.body)["podname"] == "reviews-v2-pod"
    assert json.loads(rats.body) == {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
    assert 'request_result_total{destination_app="details",response_code="200"} 1.0' in (
        metrics.text
    )


@pytest.mark.parametrize("service", ["productpage", "details", "reviews", "ratings"])
def test_prints_port_and_exits_cleanly_on_sigterm(service: str, log_dir: Path) -> None:
    app = BookinfoApp(service, log_dir=log_dir).start()
    assert app.banner.startswith(f"{service} listening on 127.0.0.1:{app.port}")
    assert http_request(app.url + "/health").status == 200
    started = time.monotonic()
    assert app.stop() == 0
    assert time.monotonic() - started < 2.0


@pytest.mark.slow
def test_details_that_never_answers_times_out_after_3s(
    reviews: dict[str, BookinfoApp], log_dir: Path
) -> None:
    hole = Blackhole()
    try:
        env = productpage_env(hole.port, reviews["v1"].port)
        with BookinfoApp("productpage", env, log_dir) as page:
            started = time.monotonic()
            text = http_request(page.url + "/productpage").text
            elapsed = time.monotonic() - started
    finally:
        hole.close()
    assert 2.9 <= elapsed < 6.0  # details' timeout is 3 s in the original
    assert "Error fetching product details" in text
    assert reviews_version_in_page(text) == "v1"
