"""envoy.filters.http.compressor: compress responses the client accepts compressed.

The gzip library is real (zlib). The brotli and zstd libraries are accepted and configured but
do not compress: their filters pass responses through, and a client that also accepts gzip gets
gzip from the gzip filter (docs/compatibility.md). Istio puts all three in front of
/stats/prometheus.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.http import filter as hf
from pilotfish.http.headers import HeaderMap, RequestHeaders, ResponseHeaders
from pilotfish.xds.translate import common as c

DEFAULT_CONTENT_TYPES = (
    "text/html",
    "text/plain",
    "text/css",
    "application/javascript",
    "application/x-javascript",
    "text/javascript",
    "text/x-javascript",
    "text/ecmascript",
    "text/js",
    "text/jscript",
    "text/x-js",
    "application/ecmascript",
    "application/x-json",
    "application/xml",
    "application/json",
    "image/svg+xml",
    "text/xml",
    "application/xhtml+xml",
)


@dataclass(frozen=True, slots=True)
class GzipLibrary:
    level: int = 6
    window_bits: int = 12
    memory_level: int = 5
    chunk_size: int = 4096


@dataclass(frozen=True, slots=True)
class PassThroughLibrary:
    encoding: str


@dataclass(frozen=True, slots=True)
class CompressorConfig:
    encoding: str  # "gzip", or the pass-through library's name
    library: Any
    min_content_length: int = 30
    content_types: tuple[str, ...] = DEFAULT_CONTENT_TYPES
    disable_on_etag_header: bool = False
    remove_accept_encoding_header: bool = False
    enabled: bool = True


class GzipLibraryFactory(ExtensionFactory):
    category = Category.COMPRESSOR_LIBRARY
    name = "envoy.compression.gzip.compressor"
    type_names = ("envoy.extensions.compression.gzip.compressor.v3.Gzip",)

    def parse(self, msg: Any, ctx: Any, path: str) -> GzipLibrary:
        levels = {0: 6, 1: 1, 2: 9, 3: 0}  # DEFAULT, BEST_SPEED, BEST_COMPRESSION, NO_COMPRESSION
        level = levels.get(
            msg.compression_level, msg.compression_level - 9 if msg.compression_level >= 10 else 6
        )
        return GzipLibrary(
            level=max(0, min(9, level)),
            window_bits=c.uint32_value(msg, "window_bits", 12),
            memory_level=c.uint32_value(msg, "memory_level", 5),
            chunk_size=c.uint32_value(msg, "chunk_size", 4096),
        )


class _PassThroughFactory(ExtensionFactory):
    category = Category.COMPRESSOR_LIBRARY

    def __init__(self, name: str, type_name: str, encoding: str) -> None:
        self.name = name  # type: ignore[misc]
        self.type_names = (type_name,)  # type: ignore[misc]
        self.encoding = encoding

    def parse(self, msg: Any, ctx: Any, path: str) -> PassThroughLibrary:
        return PassThroughLibrary(self.encoding)


def compressor_libraries() -> list[ExtensionFactory]:
    return [
        GzipLibraryFactory(),
        _PassThroughFactory(
            "envoy.compression.brotli.compressor",
            "envoy.extensions.compression.brotli.compressor.v3.Brotli",
            "br",
        ),
        _PassThroughFactory(
            "envoy.compression.zstd.compressor",
            "envoy.extensions.compression.zstd.compressor.v3.Zstd",
            "zstd",
        ),
    ]


class CompressorFactory(ExtensionFactory):
    category = Category.HTTP_FILTER
    name = "envoy.filters.http.compressor"
    type_names = ("envoy.extensions.filters.http.compressor.v3.Compressor",)

    def parse(self, msg: Any, ctx: Any, path: str) -> CompressorConfig:
        tc = f"{path}.typed_config"
        if not msg.HasField("compressor_library"):
            raise ConfigError(f"{tc}.compressor_library", "value is required")
        lib = msg.compressor_library
        ext = ctx.extension(
            Category.COMPRESSOR_LIBRARY, lib.name, lib.typed_config, f"{tc}.compressor_library"
        )
        library = ext.config if ext is not None else PassThroughLibrary("identity")
        encoding = "gzip" if isinstance(library, GzipLibrary) else library.encoding
        common = None
        if msg.HasField("response_direction_config") and msg.response_direction_config.HasField(
            "common_config"
        ):
            common = msg.response_direction_config.common_config
        min_len = 30
        types: tuple[str, ...] = DEFAULT_CONTENT_TYPES
        enabled = True
        if common is not None:
            min_len = c.uint32_value(common, "min_content_length", 30)
            if len(common.content_type):
                types = tuple(common.content_type)
            if common.HasField("enabled"):
                enabled = common.enabled.default_value.value
        else:
            if msg.HasField("content_length"):
                min_len = msg.content_length.value
            if len(msg.content_type):
                types = tuple(msg.content_type)
        return CompressorConfig(
            encoding=encoding,
            library=library,
            min_content_length=min_len,
            content_types=types,
            disable_on_etag_header=msg.response_direction_config.disable_on_etag_header
            if msg.HasField("response_direction_config")
            else msg.disable_on_etag_header,
            remove_accept_encoding_header=msg.response_direction_config.remove_accept_encoding_header
            if msg.HasField("response_direction_config")
            else msg.remove_accept_encoding_header,
            enabled=enabled,
        )

    def build(self, config: CompressorConfig, ctx: Any) -> Callable[[], hf.HttpFilter]:
        if not isinstance(config.library, GzipLibrary) or not config.enabled:
            return hf.HttpFilter  # pass-through
        return lambda: GzipFilter(config)


def _accepts(accept_encoding: bytes, encoding: bytes) -> bool:
    """Is ``encoding`` acceptable per Accept-Encoding (q=0 refuses, ``*`` matches)?"""
    star = False
    for part in accept_encoding.lower().split(b","):
        name, _, params = part.strip().partition(b";")
        q = 1.0
        params = params.strip()
        if params.startswith(b"q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if name.strip() == encoding:
            return q > 0
        if name.strip() == b"*":
            star = q > 0
    return star


class GzipFilter(hf.HttpFilter):
    __slots__ = ("accepted", "compressor", "config")

    def __init__(self, config: CompressorConfig) -> None:
        self.config = config
        self.accepted = False
        self.compressor: Any = None

    def decode_headers(self, headers: RequestHeaders, end_stream: bool) -> int:
        ae = headers.get_joined(b"accept-encoding")
        self.accepted = ae is not None and _accepts(ae, b"gzip")
        if self.accepted and self.config.remove_accept_encoding_header:
            headers.remove(b"accept-encoding")
        return hf.CONTINUE

    def encode_headers(self, headers: ResponseHeaders, end_stream: bool) -> int:
        if not self.accepted or end_stream or not self._compressible(headers):
            return hf.CONTINUE
        cfg = self.config
        lib = cfg.library
        self.compressor = zlib.compressobj(
            lib.level, zlib.DEFLATED, 16 + max(9, lib.window_bits), lib.memory_level
        )
        headers.remove(b"content-length")
        headers.set(b"content-encoding", b"gzip")
        vary = headers.get(b"vary")
        if vary is None:
            headers.add(b"vary", b"accept-encoding")
        elif b"accept-encoding" not in vary.lower():
            headers.set(b"vary", vary + b", accept-encoding")
        if cfg.disable_on_etag_header is False:
            etag = headers.get(b"etag")
            if etag is not None and not etag.startswith(b"W/"):
                headers.set(b"etag", b"W/" + etag)
        return hf.CONTINUE

    def _compressible(self, headers: ResponseHeaders) -> bool:
        cfg = self.config
        if headers.get(b"content-encoding") is not None:
            return False
        if b"no-transform" in (headers.get(b"cache-control") or b""):
            return False
        if cfg.disable_on_etag_header and headers.get(b"etag") is not None:
            return False
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) < cfg.min_content_length:
            return False
        ctype = (
            (headers.get(b"content-type") or b"").split(b";")[0].strip().decode("latin-1").lower()
        )
        return ctype in cfg.content_types

    def encode_data(self, data: bytes, end_stream: bool) -> int | bytes:
        comp = self.compressor
        if comp is None:
            return hf.CONTINUE
        # Flush each chunk so that streamed responses stream compressed too.
        return comp.compress(data) + (comp.flush() if end_stream else comp.flush(zlib.Z_SYNC_FLUSH))

    def encode_trailers(self, trailers: HeaderMap) -> int:
        comp = self.compressor
        if comp is not None:
            self.compressor = None
            self.stream.add_encoded_data(self, comp.flush())
        return hf.CONTINUE
