"""BookInfo ratings: each reviewer's stars as JSON, like Istio's ratings.js (v1, in memory).

``python -m pilotfish.mesh.bookinfo.ratings [port] [--host H] [--port P]``

Environment: ``SERVICE_VERSION`` (``v1`` default; ``v-faulty``: half the requests answer 503;
``v-delayed``: half the requests wait 7 s; ``v-unavailable``: unavailable one minute in two).
The database-backed ``v2`` (MongoDB/MySQL) is not implemented: it answers like v1.

* ``GET /ratings/<id>``: ``{"id":<id>,"ratings":{"Reviewer1":5,"Reviewer2":4}}``;
  a non-numeric id: 400 ``{"error":"please provide numeric product ID"}``.
* ``POST /ratings/<id>`` with a JSON body: stores those ratings for the product (in memory).
* ``GET /health``: ``{"status":"Ratings is healthy"}``.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import threading
import time

from pilotfish.mesh.bookinfo.common import BookinfoHandler, Response, json_response, run_app

__all__ = ["RatingsHandler", "main"]

_RATINGS_PATH = re.compile(r"/ratings/[0-9]*")
_user_ratings: dict[int, object] = {}
_lock = threading.Lock()
_started = time.monotonic()


def _parse_int(text: str) -> int | None:
    """JavaScript ``parseInt``: leading digits (after an optional sign), else NaN (None)."""
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else None


def _local_ratings(product_id: int) -> object:
    with _lock:
        if product_id in _user_ratings:
            return _user_ratings[product_id]
    return {"id": product_id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}


def _unavailable() -> Response:
    return json_response({"error": "Service unavailable"}, 503, compact=True)


class RatingsHandler(BookinfoHandler):
    app_name = "ratings"

    def route(self, method: str, path: str, query: str, body: bytes) -> Response | None:
        version = os.environ.get("SERVICE_VERSION", "v1")
        if path == "/health" and method in ("GET", "HEAD"):
            return json_response({"status": "Ratings is healthy"}, compact=True)
        if not _RATINGS_PATH.match(path):
            return None
        product_id = _parse_int(path.rsplit("/", maxsplit=1)[-1])
        if product_id is None:
            return json_response({"error": "please provide numeric product ID"}, 400, compact=True)
        if method == "POST":
            try:
                ratings = json.loads(body)
            except ValueError:
                return json_response(
                    {"error": "please provide valid ratings JSON"}, 400, compact=True
                )
            with _lock:
                _user_ratings[product_id] = {"id": product_id, "ratings": ratings}
            return json_response(_local_ratings(product_id), compact=True)
        if version == "v-faulty" and random.random() <= 0.5:
            return _unavailable()
        if version == "v-delayed" and random.random() <= 0.5:
            time.sleep(7)
        if version == "v-unavailable" and int((time.monotonic() - _started) // 60) % 2 == 1:
            return _unavailable()
        return json_response(_local_ratings(product_id), compact=True)


def main(argv: list[str] | None = None) -> int:
    return run_app("ratings", RatingsHandler, argv)


if __name__ == "__main__":
    sys.exit(main())
