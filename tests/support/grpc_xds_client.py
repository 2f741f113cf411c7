"""A proxyless gRPC client (grpcio's own xDS client) for tests, run as a process:

    GRPC_XDS_BOOTSTRAP=bootstrap.json python grpc_xds_client.py xds:///myservice

Each line ``call`` on stdin makes one unary call to ``/test.Echo/Ping`` through the channel
and prints ``OK <reply>`` or ``ERR <status> <details>``; end of input exits."""

from __future__ import annotations

import sys

import grpc


def main() -> int:
    target = sys.argv[1]
    with grpc.insecure_channel(target) as channel:
        ping = channel.unary_unary("/test.Echo/Ping")
        print("READY", flush=True)
        for line in sys.stdin:
            if line.strip() != "call":
                continue
            try:
                reply = ping(b"ping", timeout=10, wait_for_ready=True)
                print("OK", reply.decode(), flush=True)
            except grpc.RpcError as err:
                print("ERR", err.code().name, str(err.details()).replace("\n", " "), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
