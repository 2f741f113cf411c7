"""pilotfish: a service-mesh data plane in Python that stands where Envoy stands."""

__version__ = "0.1.0"

# The Envoy release whose behaviour and API pilotfish follows (reported by --version and
# /server_info so that tools which parse Envoy's version keep working).
ENVOY_API_VERSION = "1.40.0"
