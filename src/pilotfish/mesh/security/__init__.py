"""The local mesh's workload identity: a CA (ca.py) and per-pod SDS servers (sds_server.py),
the parts istiod's CA and istio-agent play in Istio."""
