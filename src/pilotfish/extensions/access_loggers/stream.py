"""envoy.access_loggers.stdout / envoy.access_loggers.stderr: the file logger writing to the
process's standard streams (through the same buffered AccessLogManager files, as Envoy)."""

from __future__ import annotations

from typing import Any, ClassVar

from envoy.extensions.access_loggers.stream.v3 import stream_pb2

from pilotfish.accesslog.formatter import DEFAULT_FORMAT, compile_text_format
from pilotfish.accesslog.manager import AccessLogManager
from pilotfish.extensions.access_loggers.file import (
    FileAccessLogConfig,
    FileAccessLogger,
    build_logger,
    compile_log_format,
)
from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.xds.translate.context import parse_config

__all__ = ["StderrAccessLogFactory", "StdoutAccessLogFactory"]


class _StreamAccessLogFactory(ExtensionFactory):
    category = Category.ACCESS_LOGGER
    device: ClassVar[str]
    message: ClassVar[type[Any]]

    def parse(self, msg: Any, ctx: Any, path: str) -> FileAccessLogConfig:
        parse_config(msg, self.message, path)
        if msg.HasField("log_format"):
            formatter = compile_log_format(msg.log_format, f"{path}.typed_config.log_format")
        else:
            formatter = compile_text_format(DEFAULT_FORMAT)
        return FileAccessLogConfig(path=self.device, formatter=formatter, config_path=path)

    def build(self, config: FileAccessLogConfig, manager: AccessLogManager) -> FileAccessLogger:
        return build_logger(config, manager)


class StdoutAccessLogFactory(_StreamAccessLogFactory):
    name = "envoy.access_loggers.stdout"
    type_names = ("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",)
    device = "/dev/stdout"
    message = stream_pb2.StdoutAccessLog


class StderrAccessLogFactory(_StreamAccessLogFactory):
    name = "envoy.access_loggers.stderr"
    type_names = ("envoy.extensions.access_loggers.stream.v3.StderrAccessLog",)
    device = "/dev/stderr"
    message = stream_pb2.StderrAccessLog
