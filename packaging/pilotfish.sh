#!/bin/sh
# pilot-agent runs this with Envoy's command line (-c etc/istio/proxy/envoy-rev.json
# --drain-time-s ... --concurrency ...); pilotfish accepts it as Envoy does.
export GRPC_VERBOSITY="${GRPC_VERBOSITY:-ERROR}"
exec /opt/pilotfish/bin/pilotfish "$@"
