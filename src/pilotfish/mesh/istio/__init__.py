"""The local mesh with Istio's own control plane (``pilotfishctl up --control-plane istiod``):
real ``pilot-discovery`` reading Istio's YAML from a directory (no Kubernetes), real
``pilot-agent`` starting every sidecar and the gateway with pilotfish (or Envoy) as its
``binaryPath``, and real ``istio-iptables`` setting each pod's capture rules.

- ``binaries``: where ``make istio`` put the Go binaries, and the bootstrap template.
- ``configdir``: the local mesh's objects as the files istiod's ``--configDir`` reads
  (Kubernetes Services become ServiceEntries, workloads WorkloadEntries, as for VMs).
- ``agent``: a pilot-agent's working directory, environment and ``ProxyConfig``.
- ``plane``: the control plane daemon: pods, istiod, one pilot-agent per proxy.
"""
