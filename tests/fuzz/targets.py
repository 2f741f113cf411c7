"""Fuzz targets for the HTTP/1.1 codec and the connection manager, in-process and sans sockets.

Each target takes one input (bytes) and raises AssertionError (or any unexpected exception)
when an invariant breaks:

* ``server_codec``: the request codec raises nothing but CodecError, and gives the same events
  whether the input arrives whole or in pieces (the split points come from the input's first
  byte), up to the point of an error.
* ``client_codec``: the response codec raises nothing but CodecError (the input after the
  first byte is an upstream's response stream).
* ``conn_manager``: the real connection manager (direct-response routes, normalize_path,
  merge_slashes, UNESCAPE_AND_REDIRECT), fed the input in pieces over an in-memory transport,
  never lets an exception out, answers every request it accepted exactly once and in order
  (unless it reset the connection), writes only well-formed HTTP/1.1 responses, and leaves no
  active request behind when the connection goes.

The compiled (mypyc) modules are bypassed by :func:`use_python_sources` so that a
coverage-guided fuzzer (atheris) can instrument them; the behaviour is the same.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["TARGETS", "run", "use_python_sources"]


class _PythonSourcesFirst(importlib.abc.MetaPathFinder):
    """Import ``pilotfish.*`` modules from their .py source even where a compiled extension
    sits next to it (extensions win in the default finder)."""

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("pilotfish.") or not path:
            return None
        name = fullname.rsplit(".", 1)[1]
        for entry in path:
            source = Path(entry) / f"{name}.py"
            if source.exists():
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def use_python_sources() -> None:
    """Call before the first ``pilotfish`` import: every pilotfish module runs from source."""
    assert not any(m.startswith("pilotfish.") for m in sys.modules), "pilotfish already imported"
    sys.meta_path.insert(0, _PythonSourcesFirst())


def _pieces(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut at points chosen by ``seed`` (1 to 16 pieces)."""
    if seed & 1 or len(data) < 2:
        return [data]
    cuts = sorted({(seed * (i + 7) * 2654435761) % len(data) for i in range(seed % 16)})
    out = []
    start = 0
    for cut in cuts:
        if cut > start:
            out.append(data[start:cut])
            start = cut
    out.append(data[start:])
    return out


# --- the request codec -------------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_request_headers(self, headers: Any) -> None:
        self.events.append(
            ("headers", headers.method, headers.path, headers.authority, tuple(headers.items))
        )

    def on_request_body(self, data: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))

    def on_request_complete(self, trailers: Any) -> None:
        self.events.append(("complete", tuple(trailers.items) if trailers else None))


def _parse_requests(chunks: list[bytes]) -> tuple[list[tuple[Any, ...]], str | None]:
    from pilotfish.codec.http1 import CodecError, Http1ServerCodec

    recorder = _Recorder()
    codec = Http1ServerCodec(recorder, enable_trailers=True)
    error = None
    for chunk in chunks:
        try:
            rest = codec.feed(chunk)
        except CodecError as e:
            error = e.details
            break
        if rest is not None:
            break  # an upgrade: what follows is not HTTP
    return recorder.events, error


def server_codec(data: bytes) -> None:
    if not data:
        return
    stream = data[1:]
    whole, whole_error = _parse_requests([stream])
    split, split_error = _parse_requests(_pieces(stream, data[0]))
    if whole_error is None and split_error is None:
        assert whole == split, (whole, split)
    else:
        # An error may be found earlier or later depending on the pieces; what was delivered
        # before it must agree.
        shorter = min(len(whole), len(split))
        assert whole[: shorter - 1] == split[: shorter - 1], (whole, split)


# --- the response codec ------------------------------------------------------------------------


class _ClientRecorder:
    def on_response_headers(self, headers: Any, end_stream: bool) -> None:
        pass

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_complete(self, trailers: Any) -> None:
        pass

    def on_informational(self, headers: Any) -> None:
        pass


def client_codec(data: bytes) -> None:
    from pilotfish.codec.http1 import CodecError, Http1ClientCodec

    if not data:
        return
    codec = Http1ClientCodec(_ClientRecorder(), enable_trailers=True)
    codec.head_request = bool(data[0] & 2)
    try:
        for chunk in _pieces(data[1:], data[0]):
            codec.feed(chunk)
        codec.eof()
    except CodecError:
        pass


# --- the connection manager --------------------------------------------------------------------

_BOOTSTRAP = """
static_resources:
  listeners:
  - name: fuzz
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": "type.googleapis.com/envoy.extensions.filters.network.\
http_connection_manager.v3.HttpConnectionManager"
          stat_prefix: fuzz
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {match: {prefix: "/private"}, direct_response: {status: 403}}
              - {match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: ok}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        assert not self.closed, "write after close"
        self.written.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True


class _Timer:
    def __init__(self, when: float) -> None:
        self._when = when

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        pass


class _Clock:
    """Stands in for the event loop in the connection manager: a fixed time, timers that never
    fire (a real loop would keep every one of the fuzzer's millions of timers)."""

    def time(self) -> float:
        return 1000.0

    def call_at(self, when: float, callback: Any, *args: Any) -> _Timer:
        return _Timer(when)

    def call_later(self, delay: float, callback: Any, *args: Any) -> _Timer:
        return _Timer(1000.0 + delay)


_HCM: Any = None


def _manager() -> Any:
    global _HCM
    if _HCM is None:
        from pilotfish.context import ServerContext
        from pilotfish.stats.store import Store
        from pilotfish.upstream.cluster_manager import ClusterManager
        from pilotfish.xds.bootstrap import BootstrapSource, load_bootstrap

        loop = asyncio.new_event_loop()
        model = load_bootstrap(BootstrapSource(config_yaml=_BOOTSTRAP)).model
        store = Store(model.stats)
        ctx = ServerContext(loop=loop, stats=store, cluster_manager=ClusterManager(store, loop))
        ext = model.listeners[0].filter_chains[0].filters[0]
        _HCM = ext.factory.build(ext.config, ctx, listener_prefix="listener.fuzz.")
        _HCM.loop = _Clock()
    return _HCM


class _Responses:
    """Parses what the proxy wrote: a sequence of whole HTTP/1.1 responses."""

    def __init__(self) -> None:
        import httptools

        self.statuses: list[int] = []
        self.parser = httptools.HttpResponseParser(self)
        self.head = False

    def on_headers_complete(self) -> bool:
        self.statuses.append(self.parser.get_status_code())
        return self.head  # a HEAD response has no body

    def on_message_complete(self) -> None:
        pass


def conn_manager(data: bytes) -> None:
    from pilotfish.net.connection import ConnectionInfo

    if not data:
        return
    hcm = _manager()
    stats = hcm.stats
    requests_before = stats.downstream_rq_total.value
    info = ConnectionInfo(1, ("127.0.0.1", 8080), ("127.0.0.1", 40000), 0.0, 1 << 20)
    conn = hcm.new_connection(info)
    transport = _Transport()
    conn.connection_made(transport)
    for chunk in _pieces(data[1:], data[0]):
        if transport.closed:
            break
        conn.data_received(chunk)
    conn.connection_lost(None)
    assert stats.downstream_rq_active.value == 0, "a request is still active"
    accepted = stats.downstream_rq_total.value - requests_before
    out = b"".join(transport.written)
    if transport.aborted:
        return  # a reset: responses may be cut short
    responses = _Responses()
    # HEAD responses carry no body: the parser cannot know, so HEAD requests are not fuzzed
    # for framing here (their statuses are still counted).
    responses.head = b"HEAD" in data
    try:
        responses.parser.feed_data(out)
    except Exception as e:  # httptools' own errors: the proxy wrote a malformed response
        if not responses.head:
            raise AssertionError(f"malformed response stream {out[:300]!r}: {e}") from None
        return
    answered = len([s for s in responses.statuses if s >= 200 or s == 101])
    if answered != accepted and not (responses.head or b"100-continue" in data.lower()):
        raise AssertionError(f"{accepted} requests accepted, {answered} answered: {out[:500]!r}")


TARGETS = {"server_codec": server_codec, "client_codec": client_codec, "conn_manager": conn_manager}


def run(data: bytes) -> None:
    """One fuzz input for every target."""
    server_codec(data)
    client_codec(data)
    conn_manager(data)
