"""envoy.access_loggers.file: one line per request, formatted by a SubstitutionFormatString,
appended to a file through the AccessLogManager (``pilotfish.accesslog.manager``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.extensions.access_loggers.file.v3 import file_pb2

from pilotfish.accesslog.formatter import (
    DEFAULT_FORMAT,
    Formatter,
    compile_json_format,
    compile_text_format,
)
from pilotfish.accesslog.manager import AccessLogFile, AccessLogManager
from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.stream_info import StreamInfo
from pilotfish.xds import protos
from pilotfish.xds.translate.context import parse_config

__all__ = [
    "FileAccessLogConfig",
    "FileAccessLogFactory",
    "FileAccessLogger",
    "compile_log_format",
]

# Formatter extensions (SubstitutionFormatString.formatters) and the commands they add.
_FORMATTER_EXTENSIONS = {
    "envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery": ("REQ_WITHOUT_QUERY",),
}


@dataclass(frozen=True, slots=True)
class FileAccessLogConfig:
    path: str  # "/dev/stdout" and "/dev/stderr" for the stream loggers
    formatter: Formatter
    config_path: str = ""  # where the path was configured, for errors opening it


class FileAccessLogger:
    """Formats a StreamInfo and buffers the line in the path's AccessLogFile."""

    __slots__ = ("_file", "_format", "format_errors")

    def __init__(self, formatter: Formatter, file: AccessLogFile) -> None:
        self._format = formatter.format
        self._file = file
        self.format_errors = 0

    def log(self, info: StreamInfo) -> None:
        try:
            line = self._format(info)
        except Exception:  # a bad value must not fail the request: count it, log nothing
            self.format_errors += 1
            return
        try:
            data = line.encode("latin-1")  # the formatter's output is bytes in latin-1 form
        except UnicodeEncodeError:
            data = line.encode("utf-8", "surrogateescape")
        self._file.write(data)


def build_logger(config: FileAccessLogConfig, manager: AccessLogManager) -> FileAccessLogger:
    try:
        file = manager.open(config.path)
    except OSError as e:
        raise ConfigError(
            config.config_path, f"unable to open file '{config.path}': {e.strerror}"
        ) from None
    return FileAccessLogger(config.formatter, file)


class FileAccessLogFactory(ExtensionFactory):
    category = Category.ACCESS_LOGGER
    name = "envoy.access_loggers.file"
    type_names = ("envoy.extensions.access_loggers.file.v3.FileAccessLog",)

    def parse(self, msg: Any, ctx: Any, path: str) -> FileAccessLogConfig:
        parse_config(msg, file_pb2.FileAccessLog, path)
        tc = f"{path}.typed_config"
        if not msg.path:
            raise ConfigError(f"{tc}.path", "value length must be at least 1 characters")
        kind = msg.WhichOneof("access_log_format")
        if kind == "log_format":
            formatter = compile_log_format(msg.log_format, f"{tc}.log_format")
        elif kind == "format":  # deprecated
            formatter = compile_text_format(msg.format, f"{tc}.format")
        elif kind in ("json_format", "typed_json_format"):  # deprecated
            fields = struct_to_python(getattr(msg, kind))
            formatter = compile_json_format(fields, path=f"{tc}.{kind}")
        else:
            formatter = compile_text_format(DEFAULT_FORMAT)
        return FileAccessLogConfig(path=msg.path, formatter=formatter, config_path=f"{tc}.path")

    def build(self, config: FileAccessLogConfig, manager: AccessLogManager) -> FileAccessLogger:
        return build_logger(config, manager)


def compile_log_format(sfs: Any, path: str) -> Formatter:
    """envoy.config.core.v3.SubstitutionFormatString -> Formatter."""
    extra = _formatter_extensions(sfs.formatters, f"{path}.formatters")
    omit = sfs.omit_empty_values
    kind = sfs.WhichOneof("format")
    if kind == "text_format":
        return compile_text_format(
            sfs.text_format, f"{path}.text_format", omit_empty_values=omit, extra_commands=extra
        )
    if kind == "text_format_source":
        text = _inline_text(sfs.text_format_source, f"{path}.text_format_source")
        return compile_text_format(
            text, f"{path}.text_format_source", omit_empty_values=omit, extra_commands=extra
        )
    if kind == "json_format":
        return compile_json_format(
            struct_to_python(sfs.json_format),
            omit_empty_values=omit,
            path=f"{path}.json_format",
            extra_commands=extra,
        )
    raise ConfigError(path, "format is required (text_format, json_format or text_format_source)")


def _formatter_extensions(formatters: Any, path: str) -> tuple[str, ...]:
    commands: list[str] = []
    for i, ext in enumerate(formatters):
        tname = protos.type_name(ext.typed_config.type_url)
        if tname not in _FORMATTER_EXTENSIONS:
            raise ConfigError(
                f"{path}[{i}]",
                f"formatter extension '{ext.name}' ({tname or 'no type'}) is not supported "
                "by pilotfish",
            )
        commands.extend(_FORMATTER_EXTENSIONS[tname])
    return tuple(commands)


def _inline_text(ds: Any, path: str) -> str:
    """A DataSource given inline. Files and environment variables are not read: translation
    stays free of I/O."""
    kind = ds.WhichOneof("specifier")
    if kind == "inline_string":
        return str(ds.inline_string)
    if kind == "inline_bytes":
        try:
            return bytes(ds.inline_bytes).decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}.inline_bytes", "the format is not valid UTF-8") from None
    raise ConfigError(
        f"{path}.{kind}" if kind else path,
        "only inline_string and inline_bytes are supported for a format",
    )


def struct_to_python(struct: Any) -> dict[str, Any]:
    """google.protobuf.Struct -> dict, numbers kept as floats (as Envoy sees them)."""
    return {k: _value_to_python(v) for k, v in struct.fields.items()}


def _value_to_python(v: Any) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_python(v.struct_value)
    if kind == "list_value":
        return [_value_to_python(x) for x in v.list_value.values]
    if kind in (None, "null_value"):
        return None
    return getattr(v, kind)
