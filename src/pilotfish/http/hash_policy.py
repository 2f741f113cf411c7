"""The request's hash from a route's ``hash_policy``, computed exactly as Envoy's
``Http::HashPolicyImpl`` so that RING_HASH and MAGLEV pick the same host as Envoy for a key.

Each policy yields a 64-bit xxHash64 (seed 0) of its key, or nothing:
- header: all values of the header (after the optional ``regex_rewrite``), sorted, hashed one
  after another with the previous hash as the seed (Envoy's ``xxHash64`` over a span);
- cookie: the cookie's value; when it is absent and the policy has a ``ttl``, Envoy generates
  one (the hex xxHash64 of the connection's remote and local addresses), sends it to the client
  in a ``Set-Cookie`` and hashes that;
- connection_properties: the downstream client IP (without port);
- query_parameter: the first value of the parameter, not decoded;
- filter_state: the hash of a hashable filter state object (``hash()``), or of a string.
A policy's hash is combined into the previous result rotated left by one bit; once a hash
exists, a ``terminal`` policy ends the computation (also when it yielded nothing itself).
"""

from __future__ import annotations

from typing import Any

from xxhash import xxh64_intdigest

from pilotfish.http.headers import RequestHeaders
from pilotfish.model.route import HashPolicy

_MASK64 = (1 << 64) - 1


def request_hash(
    policies: tuple[HashPolicy, ...],
    headers: RequestHeaders,
    remote_address: str,
    connection_addresses: str = "",
    filter_state: dict[str, Any] | None = None,
) -> tuple[int | None, list[bytes] | None]:
    """The hash (None when no policy yields one: the balancer then picks at random, as Envoy)
    and the Set-Cookie values of cookies generated for cookie policies with a ``ttl``.

    ``remote_address`` is the downstream client address (XFF-derived when trusted);
    ``connection_addresses`` the connection's remote address followed by its local address
    (the seed of a generated cookie)."""
    result: int | None = None
    set_cookies: list[bytes] | None = None
    for hp in policies:
        new: int | None = None
        kind = hp.kind
        if kind == "header":
            values = headers.get_all(hp.key)
            if values:
                rw = hp.regex_rewrite
                if rw is not None:
                    pattern, substitution = rw
                    values = [pattern.replace_all(v, substitution) for v in values]
                if len(values) == 1:
                    new = xxh64_intdigest(values[0])
                else:
                    h = 0
                    for v in sorted(values):
                        h = xxh64_intdigest(v, h)
                    new = h
        elif kind == "cookie":
            cookie = cookie_value(headers.get_all(b"cookie"), hp.key)
            if cookie:
                new = xxh64_intdigest(cookie)
            elif hp.cookie_ttl is not None:
                generated = b"%016x" % xxh64_intdigest(connection_addresses.encode("latin-1"))
                if set_cookies is None:
                    set_cookies = []
                set_cookies.append(set_cookie_value(hp, generated))
                new = xxh64_intdigest(generated)
        elif kind == "connection_properties":
            ip = address_ip(remote_address)
            if ip:
                new = xxh64_intdigest(ip.encode("latin-1"))
        elif kind == "query_parameter":
            param = query_value(headers.path, hp.key)
            if param is not None:
                new = xxh64_intdigest(param)
        elif filter_state is not None:  # filter_state
            obj = filter_state.get(hp.name)
            if obj is not None:
                new = _filter_state_hash(obj)
        if new is not None:
            if result is None:
                result = new
            else:
                result = (((result << 1) & _MASK64) | (result >> 63)) ^ new
        if hp.terminal and result is not None:
            break
    return result, set_cookies


def connection_hash(policies: tuple[HashPolicy, ...], remote_address: str) -> int | None:
    """The TCP proxy's hash (Envoy's ``Network::HashPolicyImpl``): the client IP's xxHash64;
    a filter_state policy yields nothing (no filter sets hashable connection state)."""
    for hp in policies:
        if hp.kind == "connection_properties":
            ip = address_ip(remote_address)
            if ip:
                return xxh64_intdigest(ip.encode("latin-1"))
    return None


def _filter_state_hash(obj: Any) -> int | None:
    if isinstance(obj, str):
        return xxh64_intdigest(obj.encode())
    hash_fn = getattr(obj, "hash", None)
    if hash_fn is None:
        return None  # not a Hashable object: Envoy yields no hash either
    value = hash_fn()
    return None if value is None else int(value) & _MASK64


def cookie_value(headers: list[bytes], name: bytes) -> bytes:
    """Envoy's parseCookieValue: the first cookie called ``name`` in the Cookie headers, with
    surrounding double quotes removed; b"" when there is none."""
    for header in headers:
        for part in header.split(b";"):
            eq = part.find(b"=")
            if eq < 0:
                continue
            if part[:eq].lstrip(b" ") == name:
                v = part[eq + 1 :]
                if len(v) >= 2 and v[:1] == b'"' and v[-1:] == b'"':
                    v = v[1:-1]
                return v
    return b""


def set_cookie_value(hp: HashPolicy, value: bytes) -> bytes:
    """Envoy's makeSetCookieValue (always HttpOnly for a hash policy's cookie)."""
    out = b'%s="%s"' % (hp.key, value)
    ttl = hp.cookie_ttl
    if ttl:
        out += b"; Max-Age=%d" % ttl
    if hp.cookie_path:
        out += b"; Path=" + hp.cookie_path.encode("latin-1")
    for name, attr in hp.cookie_attributes:
        out += b"; " + name.encode("latin-1")
        if attr:
            out += b"=" + attr.encode("latin-1")
    return out + b"; HttpOnly"


def address_ip(address: str) -> str:
    """The IP of "ip:port" or "[ipv6]:port" (Envoy's addressAsString); "" for a Unix socket
    path (Envoy: no IP, no hash)."""
    if address.startswith("["):
        return address[1 : address.find("]")]
    if address.count(":") == 1:
        return address.rsplit(":", 1)[0]
    return "" if address[:1] in ("/", "@", "") else address


def query_value(path: bytes, name: bytes) -> bytes | None:
    """Envoy's QueryParamsMulti::getFirstValue over the undecoded query string."""
    q = path.find(b"?")
    if q < 0:
        return None
    query = path[q + 1 :]
    h = query.find(b"#")
    if h >= 0:
        query = query[:h]
    for part in query.split(b"&"):
        k, _, v = part.partition(b"=")
        if k == name:
            return v
    return None
