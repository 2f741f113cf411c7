"""TLS: secrets (static and SDS), SSL contexts built from Envoy's TLS contexts, peer checks."""
