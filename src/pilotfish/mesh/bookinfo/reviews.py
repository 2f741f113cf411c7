"""BookInfo reviews: two reviews of the book as JSON, with stars from ratings in v2 and v3,
like Istio's reviews (LibertyRestEndpoint.java).

``python -m pilotfish.mesh.bookinfo.reviews [port] [--host H] [--port P]``

Environment (as the reviews images and bookinfo.yaml set them):

* ``SERVICE_VERSION``: ``v1`` (default), ``v2`` or ``v3``. It only chooses the defaults of the
  next two, as the v1/v2/v3 images bake them: v1 no ratings, v2 black stars, v3 red stars.
* ``ENABLE_RATINGS`` (``true``/``false``) and ``STAR_COLOR`` (``black``/``red``): override.
* ``RATINGS_HOSTNAME`` (``ratings``), ``RATINGS_SERVICE_PORT`` (9080), ``SERVICES_DOMAIN``.
* ``HOSTNAME`` and ``CLUSTER_NAME``: answered as ``podname`` and ``clustername`` (the pod's
  name tells which version answered). Unset: ``reviews-<version>`` and ``"null"`` (the
  original answers ``"null"`` for both; a pod always has a HOSTNAME).
* ``HTTP_PROXY``/``http_proxy``/``NO_PROXY``: the call to ratings goes through that proxy.

* ``GET /reviews/<id>`` (integer id, else 404): ``{"id": "<id>","podname": ...,"clustername":
  ...,"reviews": [...]}``, byte for byte as the original builds it; with ratings enabled each
  review has ``"rating": {"stars": N, "color": "black"}`` or, when ratings failed,
  ``"rating": {"error": "Ratings service is currently unavailable"}``.
* ``GET /health``: ``{"status": "Reviews is healthy"}``.

The call to ``{ratings}/ratings/<id>`` carries the incoming request's headers among
:data:`~pilotfish.mesh.bookinfo.common.SERVICE_HEADERS_TO_PROPAGATE` and
``Accept: application/json``; its timeout (connect and receive) is 10 s for black stars and
2.5 s otherwise, as in the original.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass

from pilotfish.mesh.bookinfo.common import (
    SERVICE_HEADERS_TO_PROPAGATE,
    BookinfoHandler,
    Response,
    copy_headers,
    http_get,
    run_app,
    service_url,
)

__all__ = ["RATINGS_UNAVAILABLE", "ReviewsConfig", "ReviewsHandler", "main", "reviews_json"]

RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"
_REVIEWS_PATH = re.compile(r"/reviews/([+-]?[0-9]+)/?")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1

_REVIEWS = (
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other "
        "plays by Shakespeare.",
    ),
)


@dataclass(frozen=True)
class ReviewsConfig:
    version: str
    ratings_enabled: bool
    star_color: str
    ratings_service: str
    podname: str
    clustername: str

    @classmethod
    def from_env(cls) -> ReviewsConfig:
        version = os.environ.get("SERVICE_VERSION", "v1")
        enabled_env = os.environ.get("ENABLE_RATINGS")
        if enabled_env is None:
            enabled = version in ("v2", "v3")
        else:
            enabled = enabled_env.lower() == "true"  # Java's Boolean.valueOf
        color = os.environ.get("STAR_COLOR") or ("red" if version == "v3" else "black")
        return cls(
            version=version,
            ratings_enabled=enabled,
            star_color=color,
            ratings_service=service_url("RATINGS_HOSTNAME", "ratings", "RATINGS_SERVICE_PORT")
            + "/ratings",
            podname=os.environ.get("HOSTNAME") or f"reviews-{version}",
            clustername=os.environ.get("CLUSTER_NAME", "null"),
        )

    @property
    def ratings_timeout(self) -> float:
        return 10.0 if self.star_color == "black" else 2.5

    def describe(self) -> str:
        ratings = f"{self.star_color} stars from {self.ratings_service}"
        return f"{self.version}, {ratings if self.ratings_enabled else 'no ratings'}"


def reviews_json(config: ReviewsConfig, product_id: str, stars: tuple[int, int] | None) -> str:
    """The answer, built as the original concatenates it (its spacing included).
    ``stars``: each reviewer's stars, -1 for missing; None when ratings failed."""
    q = json.dumps
    out = "{"
    out += f'"id": {q(product_id)},'
    out += f'"podname": {q(config.podname)},'
    out += f'"clustername": {q(config.clustername)},'
    out += '"reviews": ['
    for i, (reviewer, text) in enumerate(_REVIEWS):
        out += "{"
        out += f'  "reviewer": {q(reviewer)},'
        out += f'  "text": {q(text)}'
        if config.ratings_enabled:
            n = -1 if stars is None else stars[i]
            if n != -1:
                out += f', "rating": {{"stars": {n}, "color": {q(config.star_color)}}}'
            else:
                out += f', "rating": {{"error": {q(RATINGS_UNAVAILABLE)}}}'
        out += "}"
        if i + 1 < len(_REVIEWS):
            out += ","
    out += "]"
    out += "}"
    return out


class ReviewsHandler(BookinfoHandler):
    app_name = "reviews"
    config: ReviewsConfig | None = None

    def _config(self) -> ReviewsConfig:
        if self.config is None:
            type(self).config = ReviewsConfig.from_env()
        assert self.config is not None
        return self.config

    def _stars(self, config: ReviewsConfig, product_id: str) -> tuple[int, int] | None:
        headers = copy_headers(self.headers, SERVICE_HEADERS_TO_PROPAGATE)
        headers["accept"] = "application/json"
        url = f"{config.ratings_service}/{product_id}"
        try:
            resp = http_get(url, headers, config.ratings_timeout)
        except Exception as exc:  # OSError (refused, timeout), http.client.HTTPException
            self.log_error("Error: unable to contact %s got exception %r", url, exc)
            return None
        if resp.status != 200:
            self.log_error("Error: unable to contact %s got status of %d", url, resp.status)
            return None
        try:
            answer = resp.json()
        except ValueError:
            return None
        ratings = answer.get("ratings") if isinstance(answer, dict) else None
        if not isinstance(ratings, dict):
            return (-1, -1)

        def star(name: str) -> int:
            value = ratings.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else -1

        return (star("Reviewer1"), star("Reviewer2"))

    def route(self, method: str, path: str, query: str, body: bytes) -> Response | None:
        if method not in ("GET", "HEAD"):
            return Response(405, b"", "text/plain")
        if path == "/health":
            return Response(200, b'{"status": "Reviews is healthy"}')
        m = _REVIEWS_PATH.fullmatch(path)
        if m is None:
            return None
        product_int = int(m.group(1))
        if not _INT_MIN <= product_int <= _INT_MAX:  # JAX-RS int path parameter
            return None
        product_id = str(product_int)
        config = self._config()
        stars = self._stars(config, product_id) if config.ratings_enabled else None
        return Response(200, reviews_json(config, product_id, stars).encode())


def main(argv: list[str] | None = None) -> int:
    config = ReviewsConfig.from_env()
    ReviewsHandler.config = config
    return run_app("reviews", ReviewsHandler, argv, describe=config.describe)


if __name__ == "__main__":
    sys.exit(main())
