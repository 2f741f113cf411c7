"""Header translation between HTTP/1.1 and HTTP/2, as Envoy does it when it proxies one to the
other (RFC 9113 §8.2-8.3, §8.5 and RFC 8441).

Request heads are ``RequestHeaders`` on both sides (pseudo-headers in attributes, ``host`` is
``authority``), so most of the translation is: which headers may appear on the HTTP/2 wire, and
how an HTTP/1.1 upgrade maps to an extended CONNECT and back.
"""

from __future__ import annotations

from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders

# RFC 9113 §8.2.2: connection-specific header fields never appear in HTTP/2 ("te" is allowed
# with the value "trailers" only, see drop_connection_specific).
CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)

# The preface an HTTP/2 client opens with (RFC 9113 §3.4). Envoy's AUTO codec decides on its
# first 12 bytes ("PRI * HTTP/2"), which no HTTP/1 request line starts with.
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SNIFF = CLIENT_PREFACE[:12]


def sniff_http2(data: bytes) -> bool | None:
    """codec_type AUTO: True if ``data`` (the connection's first bytes) is an HTTP/2 preface,
    False if it is not, None if too few bytes arrived to tell (read more)."""
    n = min(len(data), len(_SNIFF))
    if data[:n] != _SNIFF[:n]:
        return False
    return True if n == len(_SNIFF) else None


def drop_connection_specific(items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Header fields that may go on the HTTP/2 wire: no connection-specific ones, no ``host``
    (it travels as ``:authority``), ``te`` only as "trailers"."""
    out = []
    for name, value in items:
        if name in CONNECTION_SPECIFIC or name == b"host":
            continue
        if name == b"te" and value.strip().lower() != b"trailers":
            continue
        out.append((name, value))
    return out


def join_cookies(items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """HTTP/2 may split ``cookie`` into crumbs; one header joined with "; " is what HTTP/1.1
    (and Envoy's header map) carries (RFC 9113 §8.2.3). Placed where the first crumb was."""
    crumbs = [v for n, v in items if n == b"cookie"]
    if len(crumbs) < 2:
        return items
    out: list[tuple[bytes, bytes]] = []
    joined = False
    for name, value in items:
        if name == b"cookie":
            if not joined:
                out.append((b"cookie", b"; ".join(crumbs)))
                joined = True
            continue
        out.append((name, value))
    return out


def request_to_h2(headers: RequestHeaders) -> list[tuple[bytes, bytes]]:
    """The header block of a request sent over HTTP/2. An HTTP/1.1 upgrade request (``upgrade``
    header, e.g. WebSocket) becomes an extended CONNECT with ``:protocol`` (RFC 8441), as
    Envoy's ``transformUpgradeRequestFromH1toH2``; plain CONNECT carries no :scheme/:path."""
    method = headers.method
    items = headers.items
    upgrade = None
    for name, value in items:
        if name == b"upgrade":
            upgrade = value
            break
    if method == b"CONNECT":
        block = [(b":method", method), (b":authority", headers.authority)]
    elif upgrade is not None:
        block = [
            (b":method", b"CONNECT"),
            (b":protocol", upgrade),
            (b":scheme", headers.scheme),
            (b":authority", headers.authority),
            (b":path", headers.path),
        ]
        items = [(n, v) for n, v in items if n != b"content-length" or v != b"0"]
    else:
        block = [
            (b":method", method),
            (b":scheme", headers.scheme),
            (b":authority", headers.authority),
            (b":path", headers.path),
        ]
    block.extend(drop_connection_specific(items))
    return block


def response_to_h2(headers: ResponseHeaders, upgrade: bool = False) -> list[tuple[bytes, bytes]]:
    """The header block of a response sent over HTTP/2. For an extended CONNECT (``upgrade``)
    an HTTP/1.1 "101 Switching Protocols" becomes "200" (RFC 8441 §5)."""
    status = headers.status
    if upgrade and status == 101:
        status = 200
    block = [(b":status", b"%d" % status)]
    block.extend(drop_connection_specific(headers.items))
    return block


def response_from_h2_upgrade(headers: ResponseHeaders, protocol: bytes) -> ResponseHeaders:
    """The HTTP/1.1 view of the answer to an extended CONNECT: a 2xx becomes "101 Switching
    Protocols" with ``upgrade`` and ``connection`` (Envoy's transformUpgradeResponseFromH2toH1)."""
    if 200 <= headers.status < 300:
        items = [(n, v) for n, v in headers.items if n != b"content-length"]
        items.append((b"upgrade", protocol))
        items.append((b"connection", b"upgrade"))
        return ResponseHeaders(101, items)
    return headers


def trailers_to_h2(trailers: HeaderMap) -> list[tuple[bytes, bytes]]:
    return [(n, v) for n, v in trailers.items if n[:1] != b":" and n not in CONNECTION_SPECIFIC]
