"""BookInfo, Istio's sample application, shipped with pilotfish: small standard-library
implementations of productpage, details, reviews (v1/v2/v3) and ratings that behave like
Istio's on the wire (paths, JSON, error texts, propagated headers, timeouts), so that the local
mesh can run BookInfo without containers.

Run one with ``python -m pilotfish.mesh.bookinfo.<service> [port] [--host H] [--port P]`` or
``python -m pilotfish.mesh.bookinfo <service> ...``; see each module for its environment.
"""

SERVICES = ("productpage", "details", "reviews", "ratings")

__all__ = ["SERVICES"]
