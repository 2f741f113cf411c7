"""BookInfo, Istio's sample application, shipped with pilotfish: small standard-library
implementations of productpage, details, reviews (v1/v2/v3) and ratings that behave like
Istio's on the wire (paths, JSON, error texts, propagated headers, timeouts), so that the local
mesh can run BookInfo without containers.

Run one with ``python -m pilotfish.mesh.bookinfo.<service> [port] [--host H] [--port P]`` or
``python -m pilotfish.mesh.bookinfo <service> ...``; see each module for its environment.
Every app prints ``<service> listening on <host>:<port> (...)`` once bound (``--port 0``: a
free port), binds 127.0.0.1 unless ``--host`` says otherwise (the originals bind every
address) and exits 0 on SIGTERM or SIGINT.

Where they knowingly differ from Istio's sample (istio/istio samples/bookinfo/src):

* HTML: the same texts, ids and classes that tell what a page shows (title, "Book Details"
  table, "Book Reviews", ``<svg id="glyphicon glyphicon-star">`` stars inside
  ``class="flex gap-x-1 text-<color>-500"``, "Reviews served by: <podname>", "Error fetching
  product details"/"reviews" plus the JSON's ``error``), not the Tailwind layout.
* The session cookie is HMAC-signed JSON, not Flask's itsdangerous format.
* productpage sends ``user-agent: pilotfish-bookinfo-productpage`` when the request had none
  (``requests`` would send ``python-requests/<version>``), and no ``Accept-Encoding``.
* /login and /logout redirect to /productpage when the request has no Referer (the original
  then fails).
* reviews takes ``ENABLE_RATINGS``/``STAR_COLOR`` defaults from ``SERVICE_VERSION`` (the images
  bake them) and names its pod ``reviews-<version>`` without ``HOSTNAME`` (the original:
  ``"null"``).
* Not implemented: details' ``ENABLE_EXTERNAL_BOOK_SERVICE``, ratings v2's databases,
  productpage's OpenTelemetry spans (its B3 re-injection is reproduced: see
  :func:`~pilotfish.mesh.bookinfo.common.b3_multi_headers`).
"""

SERVICES = ("productpage", "details", "reviews", "ratings")

__all__ = ["SERVICES"]
