"""BookInfo productpage: the book's page, built from details and reviews, like Istio's
productpage.py (Flask) without its dependencies.

``python -m pilotfish.mesh.bookinfo.productpage [port] [--host H] [--port P]``

Environment, as the original reads it:

* ``DETAILS_HOSTNAME`` (``details``), ``DETAILS_SERVICE_PORT`` (9080), ``REVIEWS_HOSTNAME``
  (``reviews``), ``REVIEWS_SERVICE_PORT``, ``RATINGS_HOSTNAME`` (``ratings``),
  ``RATINGS_SERVICE_PORT``, ``SERVICES_DOMAIN`` (appended to each hostname after a dot);
* ``FLOOD_FACTOR``: extra, ignored calls to reviews per page (rate-limiting demos);
* ``HTTP_PROXY``/``http_proxy``/``NO_PROXY``: outgoing calls go through that proxy in
  absolute form, as ``requests`` does (how the local mesh points an app at its sidecar);
* ``SESSION_SECRET``: the key signing the ``session`` cookie (default: a fixed key, so that
  sessions survive restarts and work across replicas, as with the original's fixed key).

Endpoints: ``/`` and ``/index.html`` (the service table), ``/productpage`` (details and reviews
of product 0, stars coloured as reviews answers them), ``POST /login`` (form ``username``:
the ``session`` cookie remembers the user; redirect to the Referer, else /productpage),
``GET /logout``, ``/api/v1/products``, ``/api/v1/products/<id>`` (details),
``/api/v1/products/<id>/reviews``, ``/api/v1/products/<id>/ratings``, ``/health``,
``/metrics``.

Calls to details, reviews and ratings time out after 3 s; reviews is tried twice (the
original keeps this "bug" on purpose for the fault-injection task). Their headers are
:func:`forward_headers`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import re
import sys
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from email.message import Message
from http.cookies import CookieError, SimpleCookie
from typing import Any

from pilotfish.mesh.bookinfo.common import (
    BookinfoHandler,
    Response,
    b3_multi_headers,
    copy_headers,
    http_get,
    run_app,
    service_url,
)

__all__ = [
    "DETAILS_ERROR",
    "PRODUCTPAGE_HEADERS_TO_PROPAGATE",
    "RATINGS_ERROR",
    "REVIEWS_ERROR",
    "ProductpageHandler",
    "forward_headers",
    "main",
    "reviews_version_in_page",
]

# productpage.py getForwardHeaders: after the B3 context (OpenTelemetry B3MultiFormat) and
# ``end-user`` from the session, these headers are copied from the incoming request, in this
# order. Unlike details and reviews, productpage does not copy the x-b3-* headers verbatim
# (they are re-injected) nor an incoming ``end-user``.
PRODUCTPAGE_HEADERS_TO_PROPAGATE: tuple[str, ...] = (
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "sw8",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
)

DETAILS_ERROR = "Sorry, product details are currently unavailable for this book."
REVIEWS_ERROR = "Sorry, product reviews are currently unavailable for this book."
RATINGS_ERROR = "Sorry, product ratings are currently unavailable for this book."
UPSTREAM_TIMEOUT = 3.0
DEFAULT_USER_AGENT = "pilotfish-bookinfo-productpage"
_DEFAULT_SECRET = "pilotfish-bookinfo-productpage"  # like the original's fixed secret_key

PRODUCTS: list[dict[str, Any]] = [
    {
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">'
        "Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> "
        "early plays. It is his shortest and one of his most farcical comedies, with a major "
        "part of the humour coming from slapstick and mistaken identity, in addition to puns "
        "and word play.",
    }
]


def forward_headers(incoming: Message, user: str | None) -> dict[str, str]:
    """The headers productpage sends to details, reviews and ratings for ``incoming``:
    ``x-b3-traceid``/``x-b3-spanid``/``x-b3-sampled`` re-injected from the incoming B3
    context (``b3`` or ``x-b3-*``), ``end-user: <user>`` when logged in, then those of
    :data:`PRODUCTPAGE_HEADERS_TO_PROPAGATE` the request has."""
    headers = b3_multi_headers(incoming)
    if user:
        headers["end-user"] = user
    headers.update(copy_headers(incoming, PRODUCTPAGE_HEADERS_TO_PROPAGATE))
    return headers


# -- session cookie ---------------------------------------------------------------------------


def _secret() -> bytes:
    return os.environ.get("SESSION_SECRET", _DEFAULT_SECRET).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_session(data: dict[str, str]) -> str:
    payload = _b64(json.dumps(data, separators=(",", ":")).encode())
    sig = _b64(hmac.new(_secret(), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{sig}"


def decode_session(value: str) -> dict[str, str]:
    payload, _, sig = value.partition(".")
    good = _b64(hmac.new(_secret(), payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(sig, good):
        return {}
    try:
        data = json.loads(_unb64(payload))
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


# -- metrics ----------------------------------------------------------------------------------

_results: Counter[tuple[str, int]] = Counter()
_results_lock = threading.Lock()


def _count(app: str, status: int) -> None:
    with _results_lock:
        _results[(app, status)] += 1


def _metrics_text() -> str:
    lines = [
        "# HELP request_result_total Results of requests",
        "# TYPE request_result_total counter",
    ]
    with _results_lock:
        items = sorted(_results.items())
    for (app, status), n in items:
        lines.append(
            f'request_result_total{{destination_app="{app}",response_code="{status}"}} {float(n)}'
        )
    return "\n".join(lines) + "\n"


# -- calls ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upstreams:
    details: str
    reviews: str
    ratings: str
    flood_factor: int

    @classmethod
    def from_env(cls) -> Upstreams:
        return cls(
            details=service_url("DETAILS_HOSTNAME", "details", "DETAILS_SERVICE_PORT"),
            reviews=service_url("REVIEWS_HOSTNAME", "reviews", "REVIEWS_SERVICE_PORT"),
            ratings=service_url("RATINGS_HOSTNAME", "ratings", "RATINGS_SERVICE_PORT"),
            flood_factor=int(os.environ.get("FLOOD_FACTOR") or 0),
        )


def _fetch(
    app: str, url: str, headers: dict[str, str], error: str, tries: int = 1
) -> tuple[int, Any]:
    """(200, JSON) or (status, {"error": error}); status 500 when no response came."""
    status = 500
    for _ in range(tries):
        try:
            resp = http_get(url, headers, UPSTREAM_TIMEOUT)
        except Exception:
            status = 500
            continue
        status = resp.status or 500
        if resp.status == 200:
            try:
                body = resp.json()
            except ValueError:
                status = 500
                continue
            _count(app, 200)
            return 200, body
    _count(app, status)
    return status, {"error": error}


# -- HTML -------------------------------------------------------------------------------------

_STAR = (
    '<svg id="glyphicon glyphicon-star" class="h-5 w-5 flex-none" viewBox="0 0 20 20" '
    'fill="currentColor" aria-hidden="true"><path fill-rule="evenodd" d="M10.868 2.884c-.321'
    "-.772-1.415-.772-1.736 0l-1.83 4.401-4.753.381c-.833.067-1.171 1.107-.536 1.651l3.62 "
    "3.102-1.106 4.637c-.194.813.691 1.456 1.405 1.02L10 15.591l4.069 2.485c.713.436 1.598"
    "-.207 1.404-1.02l-1.106-4.637 3.62-3.102c.635-.544.297-1.584-.536-1.65l-4.752-.382-1.831"
    '-4.401z" clip-rule="evenodd" /></svg>'
)
_EMPTY_STAR = (
    '<svg xmlns="http://www.w3.org/2000/svg" fill="none" viewBox="0 0 24 24" stroke-width="1.5"'
    ' stroke="currentColor" class="h-5 w-5 flex-none"><path stroke-linecap="round" '
    'stroke-linejoin="round" d="M11.48 3.499a.562.562 0 0 1 1.04 0l2.125 5.111a.563.563 0 0 0 '
    ".475.345l5.518.442c.499.04.701.663.321.988l-4.204 3.602a.563.563 0 0 0-.182.557l1.285 "
    "5.385a.562.562 0 0 1-.84.61l-4.725-2.885a.562.562 0 0 0-.586 0L6.982 20.54a.562.562 0 0 1"
    "-.84-.61l1.285-5.386a.562.562 0 0 0-.182-.557l-4.204-3.602a.562.562 0 0 1 .321-.988l5.518"
    '-.442a.563.563 0 0 0 .475-.345L11.48 3.5Z" /></svg>'
)

_e = html.escape


def _field(obj: Any, key: str) -> str:
    value = obj.get(key, "") if isinstance(obj, dict) else ""
    return _e("" if value is None else str(value))


def _nav(user: str) -> str:
    if user:
        who = (
            f'<div class="ml-4"><p class="text-base font-medium text-gray-50">{_e(user)}</p>'
            '<a href="logout" class="text-xs font-medium text-gray-400">Sign out</a></div>'
        )
    else:
        who = '<button type="button" id="sign-in-button">Sign in</button>'
    return (
        '<nav class="bg-gray-800"><a href="#" class="text-white px-3 py-2 text-lg font-medium"'
        f' aria-current="page">BookInfo Sample</a>{who}</nav>\n'
        '<dialog id="dialog"><h2>Sign in to BookInfo</h2>'
        '<form method="post" action=\'login\' name="login_form">'
        '<label for="username">Username</label><input id="username" name="username" required>'
        '<label for="password">Password</label>'
        '<input id="password" name="passwd" type="password" required>'
        '<button type="submit">Sign in</button></form></dialog>\n'
    )


def _details_html(status: int, details: Any) -> str:
    if status == 200:
        cells = "".join(
            f"<td>{_field(details, k)}</td>"
            for k in ("ISBN-10", "publisher", "pages", "type", "language")
        )
        return (
            '<h4 class="text-3xl font-semibold">Book Details</h4>\n<table><thead><tr>'
            "<th>ISBN-10</th><th>Publisher</th><th>Pages</th><th>Type</th><th>Language</th>"
            f"</tr></thead><tbody><tr>{cells}</tr></tbody></table>\n"
        )
    out = '<p class="text-2xl text-red-500">Error fetching product details</p>\n'
    if details:
        out += f'<p class="text-lg text-gray-600">{_field(details, "error")}</p>\n'
    return out


def _stars_html(rating: Any) -> str:
    if not isinstance(rating, dict) or not rating:
        return ""
    stars = rating.get("stars")
    if stars:
        n = stars if isinstance(stars, int) else 0
        return (
            f'<div class="flex gap-x-1 text-{_field(rating, "color")}-500">'
            + _STAR * n
            + _EMPTY_STAR * (5 - n)
            + "</div>\n"
        )
    if rating.get("error"):
        return f'<p class="text-red-500">{_field(rating, "error")}</p>\n'
    return ""


def _reviews_html(status: int, reviews: Any) -> str:
    if status != 200:
        out = '<p class="text-2xl text-red-500">Error fetching product reviews</p>\n'
        if reviews:
            out += f'<p class="text-lg text-gray-600">{_field(reviews, "error")}</p>\n'
        return out
    out = '<h4 class="text-3xl font-semibold">Book Reviews</h4>\n'
    served = f"Reviews served by: {_field(reviews, 'podname')}"
    if isinstance(reviews, dict) and reviews.get("clustername") != "null":
        served += f" on cluster <div>{_field(reviews, 'clustername')}</div>"
    entries = reviews.get("reviews") if isinstance(reviews, dict) else None
    for review in entries if isinstance(entries, list) else []:
        if not isinstance(review, dict):
            continue
        out += (
            '<section class="px-6 py-12 sm:py-8 lg:px-8">\n'
            + _stars_html(review.get("rating"))
            + f'<blockquote><p>"{_field(review, "text")}"</p></blockquote>\n'
            f'<div class="font-semibold text-gray-900">{_field(review, "reviewer")}</div>\n'
            f'<div class="mt-0.5 text-gray-600 font-mono">{served}</div>\n'
            "</section>\n"
        )
    return out


def render_productpage(
    product: dict[str, Any], user: str, details: tuple[int, Any], reviews: tuple[int, Any]
) -> str:
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        "<title>Simple Bookstore App</title>\n</head>\n<body>\n"
        + _nav(user)
        + f'<h1 class="text-5xl font-bold tracking-tight text-blue-900">{_e(product["title"])}'
        f'</h1>\n<p class="mt-6 text-xl leading-8 text-gray-600">{product["descriptionHtml"]}'
        "</p>\n" + _details_html(*details) + _reviews_html(*reviews) + "</body>\n</html>\n"
    )


def render_index(upstreams: Upstreams) -> str:
    def row(name: str, url: str, children: str = "") -> str:
        return f"<tr><td>{_e(name)}</td><td>{_e(url)}</td><td>{children}</td></tr>"

    ratings = row("ratings", upstreams.ratings)
    table = (
        '<table class="table table-condensed table-bordered table-hover"><thead><tr>'
        "<th>endpoint</th><th>name</th><th>children</th></tr></thead><tbody>"
        + row("details", upstreams.details)
        + row("reviews", upstreams.reviews, f"<table><tbody>{ratings}</tbody></table>")
        + "</tbody></table>"
    )
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        "<title>Simple Bookstore App</title>\n</head>\n<body>\n"
        '<h3 class="text-2xl">Hello! This is a simple bookstore application consisting of '
        "three services as shown below</h3>\n"
        f"{table}\n<p>Click on one of the links below to auto generate a request to the "
        "backend as a real user or a tester</p>\n<ul>\n"
        '<li><a href="/productpage?u=normal">Normal user</a></li>\n'
        '<li><a href="/productpage?u=test">Test user</a></li>\n</ul>\n</body>\n</html>\n'
    )


def reviews_version_in_page(page: str) -> str | None:
    """Which reviews version a /productpage answer shows, as a person reads it: ``v1`` (reviews
    without stars), ``v2`` (black stars), ``v3`` (red stars); None when reviews failed, or the
    ratings failed so that v2 and v3 look alike."""
    if "Book Reviews" not in page:
        return None
    if 'class="flex gap-x-1 text-red-500"' in page:
        return "v3"
    if 'class="flex gap-x-1 text-black-500"' in page:
        return "v2"
    if "glyphicon-star" in page or "Ratings service is currently unavailable" in page:
        return None
    return "v1"


# -- the app ----------------------------------------------------------------------------------

_API_PRODUCT = re.compile(r"/api/v1/products/([^/]+)(?:/(reviews|ratings))?")
_HTML = "text/html; charset=utf-8"
_JSON = "application/json"


def _redirect(location: str, cookie: str) -> Response:
    body = (
        "<!doctype html>\n<html lang=en>\n<title>Redirecting...</title>\n"
        "<h1>Redirecting...</h1>\n<p>You should be redirected automatically to the target URL: "
        f'<a href="{_e(location)}">{_e(location)}</a>. If not, click the link.\n'
    )
    return Response(302, body.encode(), _HTML, [("Location", location), ("Set-Cookie", cookie)])


class ProductpageHandler(BookinfoHandler):
    app_name = "productpage"
    upstreams: Upstreams | None = None

    def _upstreams(self) -> Upstreams:
        if self.upstreams is None:
            type(self).upstreams = Upstreams.from_env()
        assert self.upstreams is not None
        return self.upstreams

    def _session(self) -> dict[str, str]:
        raw = self.headers.get("cookie")
        if not raw:
            return {}
        try:
            jar: SimpleCookie = SimpleCookie(raw)
        except CookieError:
            return {}
        morsel = jar.get("session")
        return decode_session(morsel.value) if morsel is not None else {}

    def _headers(self) -> dict[str, str]:
        headers = forward_headers(self.headers, self._session().get("user"))
        headers.setdefault("user-agent", DEFAULT_USER_AGENT)
        return headers

    def _details(self, product_id: str, headers: dict[str, str]) -> tuple[int, Any]:
        url = f"{self._upstreams().details}/details/{urllib.parse.quote(product_id)}"
        return _fetch("details", url, headers, DETAILS_ERROR)

    def _reviews(self, product_id: str, headers: dict[str, str]) -> tuple[int, Any]:
        url = f"{self._upstreams().reviews}/reviews/{urllib.parse.quote(product_id)}"
        return _fetch("reviews", url, headers, REVIEWS_ERROR, tries=2)

    def _ratings(self, product_id: str, headers: dict[str, str]) -> tuple[int, Any]:
        url = f"{self._upstreams().ratings}/ratings/{urllib.parse.quote(product_id)}"
        return _fetch("ratings", url, headers, RATINGS_ERROR)

    def _login(self, query: str, body: bytes) -> Response:
        form = urllib.parse.parse_qs(query)
        ctype = self.headers.get_content_type()
        if ctype == "application/x-www-form-urlencoded":
            form.update(urllib.parse.parse_qs(body.decode("latin-1")))
        user = (form.get("username") or [""])[0]
        if user:
            cookie = f"session={encode_session({'user': user})}; HttpOnly; Path=/"
        else:
            cookie = _expired_cookie()
        return _redirect(self.headers.get("referer") or "/productpage", cookie)

    def route(self, method: str, path: str, query: str, body: bytes) -> Response | None:
        if path == "/login":
            if method != "POST":
                return Response(405, b"Method Not Allowed", "text/plain")
            return self._login(query, body)
        if method not in ("GET", "HEAD"):
            return Response(405, b"Method Not Allowed", "text/plain")
        if path in ("/", "/index.html"):
            return Response(200, render_index(self._upstreams()).encode(), _HTML)
        if path == "/health":
            return Response(200, b"Product page is healthy", _HTML)
        if path == "/logout":
            return _redirect(self.headers.get("referer") or "/productpage", _expired_cookie())
        if path == "/productpage":
            headers = self._headers()
            details = self._details("0", headers)
            for _ in range(self._upstreams().flood_factor):
                self._reviews("0", headers)
            reviews = self._reviews("0", headers)
            user = self._session().get("user", "")
            page = render_productpage(PRODUCTS[0], user, details, reviews)
            return Response(200, page.encode(), _HTML)
        if path == "/api/v1/products":
            return Response(200, json.dumps(PRODUCTS).encode(), _JSON)
        if path == "/metrics":
            return Response(200, _metrics_text().encode(), "text/plain; version=0.0.4")
        m = _API_PRODUCT.fullmatch(path)
        if m is not None:
            product_id = urllib.parse.unquote(m.group(1))
            call = {None: self._details, "reviews": self._reviews, "ratings": self._ratings}
            status, answer = call[m.group(2)](product_id, self._headers())
            return Response(status, json.dumps(answer).encode(), _JSON)
        return None


def _expired_cookie() -> str:
    return "session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/"


def main(argv: list[str] | None = None) -> int:
    upstreams = Upstreams.from_env()
    ProductpageHandler.upstreams = upstreams

    def describe() -> str:
        return f"details {upstreams.details}, reviews {upstreams.reviews}"

    return run_app("productpage", ProductpageHandler, argv, describe=describe)


if __name__ == "__main__":
    sys.exit(main())
