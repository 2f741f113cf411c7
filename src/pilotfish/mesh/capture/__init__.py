"""Traffic capture for sidecars: the iptables rules Istio's istio-init applies."""
