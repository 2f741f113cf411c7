"""BookInfo details: the book's details as JSON, like Istio's details.rb (v1).

``python -m pilotfish.mesh.bookinfo.details [port] [--host H] [--port P]``

* ``GET /details/<id>``: ``{"id":<id>,"author":"William Shakespeare","year":1595,...}``;
  a non-numeric id: 400 ``{"error":"please provide numeric product id"}``.
* ``GET /health``: ``{"status":"Details is healthy"}``.

The original's ``ENABLE_EXTERNAL_BOOK_SERVICE`` (asking Google Books) is not implemented.
"""

from __future__ import annotations

import sys

from pilotfish.mesh.bookinfo.common import BookinfoHandler, Response, json_response, run_app

__all__ = ["DetailsHandler", "book_details", "main"]


def book_details(product_id: int) -> dict[str, object]:
    return {
        "id": product_id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }


class DetailsHandler(BookinfoHandler):
    app_name = "details"

    def route(self, method: str, path: str, query: str, body: bytes) -> Response | None:
        if path == "/health" or path.startswith("/health/"):
            return json_response({"status": "Details is healthy"}, compact=True)
        if path == "/details" or path.startswith("/details/"):
            # WEBrick's mount_proc: everything under /details; the id is the last segment.
            last = path.rstrip("/").split("/")[-1] if path.count("/") > 1 else ""
            try:
                product_id = int(last)
            except ValueError:
                return json_response(
                    {"error": "please provide numeric product id"}, 400, compact=True
                )
            return json_response(book_details(product_id), compact=True)
        return None


def main(argv: list[str] | None = None) -> int:
    return run_app("details", DetailsHandler, argv)


if __name__ == "__main__":
    sys.exit(main())
