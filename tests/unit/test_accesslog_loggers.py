"""File / stdout / stderr access loggers: config parsing from real protos, and the buffered
AccessLogManager (flush on size, on a timer, on demand; reopen; write errors)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.formatter.cel.v3 import cel_pb2  # noqa: F401 (registers the Any type)
from envoy.extensions.formatter.req_without_query.v3 import (  # noqa: F401 (as above)
    req_without_query_pb2,
)
from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyProto

from pilotfish.accesslog.formatter import DEFAULT_FORMAT, compile_text_format
from pilotfish.accesslog.manager import AccessLogManager
from pilotfish.errors import ConfigError
from pilotfish.extensions.access_loggers.file import (
    FileAccessLogConfig,
    FileAccessLogFactory,
    FileAccessLogger,
)
from pilotfish.extensions.access_loggers.stream import (
    StderrAccessLogFactory,
    StdoutAccessLogFactory,
)
from pilotfish.extensions.registry import Category, Registry
from pilotfish.stream_info import StreamInfo
from pilotfish.xds.translate.context import TranslateContext
from pilotfish.xds.translate.listener import access_logs

PATH = "listeners[0].filter_chains[0].filters[0].typed_config.access_log[0]"


class Headers:
    def __init__(self, items: dict[bytes, bytes]) -> None:
        self._d = items

    def get(self, name: bytes) -> bytes | None:
        return self._d.get(name)


def make_info(path: str = "/x") -> StreamInfo:
    info = StreamInfo()
    info.start_time = 1795645182.055301
    info.end_monotonic = 0.002
    info.response_code = 200
    info.request_headers = Headers({b":method": b"GET", b":path": path.encode()})
    return info


def file_log(**fields: Any) -> file_pb2.FileAccessLog:
    return json_format.ParseDict(fields, file_pb2.FileAccessLog())


def parse_file(**fields: Any) -> FileAccessLogConfig:
    return FileAccessLogFactory().parse(file_log(**fields), None, PATH)


def render(config: FileAccessLogConfig) -> str:
    return config.formatter.format(make_info())


# -- parsing ------------------------------------------------------------------------------------


def test_no_format_is_envoys_default() -> None:
    config = parse_file(path="/tmp/x.log")
    assert config.path == "/tmp/x.log"
    assert render(config) == compile_text_format(DEFAULT_FORMAT).format(make_info())
    assert render(config).startswith('[2026-11-25T22:19:42.055Z] "GET /x HTTP/1.1" 200 - 0 0 2 -')


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"log_format": {"text_format": "%RESPONSE_CODE% %REQ(x-nope)%\n"}}, "200 -\n"),
        (
            {
                "log_format": {
                    "text_format": "%REQ(x-nope)%|%RESPONSE_CODE%\n",
                    "omit_empty_values": True,
                }
            },
            "|200\n",
        ),
        ({"log_format": {"text_format_source": {"inline_string": "%PROTOCOL%\n"}}}, "HTTP/1.1\n"),
        (
            {"log_format": {"text_format_source": {"inline_bytes": "YWIlUkVTUE9OU0VfQ09ERSU="}}},
            "ab200",
        ),
        (
            {"log_format": {"json_format": {"b": "%RESPONSE_CODE%", "a": "%REQ(x-nope)%"}}},
            '{"a":null,"b":200}\n',
        ),
        (
            {
                "log_format": {
                    "json_format": {"b": "%RESPONSE_CODE%", "a": "%REQ(x-nope)%", "n": 100000},
                    "omit_empty_values": True,
                }
            },
            '{"b":200,"n":1e+05}\n',
        ),
        (
            {
                "log_format": {
                    "text_format": "%REQ_WITHOUT_QUERY(:PATH)%",
                    "formatters": [
                        {
                            "name": "envoy.formatter.req_without_query",
                            "typed_config": {
                                "@type": "type.googleapis.com/"
                                "envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery",
                            },
                        }
                    ],
                }
            },
            "/x",
        ),
        # Deprecated fields still work (Envoy 1.40 accepts them).
        ({"format": "%RESPONSE_CODE% %REQ(x-nope)%\n"}, "200 -\n"),
        ({"json_format": {"a": "%RESPONSE_CODE%", "b": "%REQ(x-nope)%"}}, '{"a":200,"b":null}\n'),
        ({"typed_json_format": {"a": "%RESPONSE_CODE%"}}, '{"a":200}\n'),
        ({"log_format": {"text_format": ""}}, ""),
        ({"log_format": {"json_format": {}}}, "{}\n"),
    ],
)
def test_formats(fields: dict[str, Any], line: str) -> None:
    info = make_info("/x?q=1") if "REQ_WITHOUT_QUERY" in str(fields) else make_info()
    assert parse_file(path="/tmp/x.log", **fields).formatter.format(info) == line


@pytest.mark.parametrize(
    ("fields", "path", "reason"),
    [
        ({"path": ""}, f"{PATH}.typed_config.path", "value length must be at least 1 characters"),
        (
            {"path": "/x", "log_format": {"text_format": "%FOO%"}},
            f"{PATH}.typed_config.log_format.text_format",
            "Not supported field in StreamInfo: FOO",
        ),
        (
            {"path": "/x", "log_format": {"json_format": {"a": {"b": "%REQ%"}}}},
            f"{PATH}.typed_config.log_format.json_format.a.b",
            "REQ requires parameters",
        ),
        (
            {"path": "/x", "log_format": {"text_format_source": {"inline_string": "%X%"}}},
            f"{PATH}.typed_config.log_format.text_format_source",
            "Not supported field in StreamInfo: X",
        ),
        (
            {"path": "/x", "log_format": {"text_format_source": {"filename": "/etc/hostname"}}},
            f"{PATH}.typed_config.log_format.text_format_source.filename",
            "only inline_string and inline_bytes are supported",
        ),
        (
            {"path": "/x", "log_format": {"omit_empty_values": True}},
            f"{PATH}.typed_config.log_format",
            "format is required",
        ),
        (
            {"path": "/x", "format": "%START_TIME:3%"},
            f"{PATH}.typed_config.format",
            "START_TIME does not allow length to be specified.",
        ),
        (
            {
                "path": "/x",
                "log_format": {
                    "text_format": "x",
                    "formatters": [
                        {
                            "name": "envoy.formatter.cel",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.formatter.cel.v3.Cel"
                            },
                        }
                    ],
                },
            },
            f"{PATH}.typed_config.log_format.formatters[0]",
            "formatter extension 'envoy.formatter.cel' "
            "(envoy.extensions.formatter.cel.v3.Cel) is not supported by pilotfish",
        ),
    ],
)
def test_parse_errors(fields: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_file(**fields)
    assert e.value.path == path
    assert reason in e.value.reason


def test_wrong_message_type() -> None:
    with pytest.raises(ConfigError, match=r"expected envoy\.extensions\.access_loggers\.file\.v3"):
        FileAccessLogFactory().parse(stream_pb2.StdoutAccessLog(), None, PATH)


def test_stream_loggers() -> None:
    out = StdoutAccessLogFactory().parse(stream_pb2.StdoutAccessLog(), None, PATH)
    assert out.path == "/dev/stdout"
    assert render(out) == compile_text_format(DEFAULT_FORMAT).format(make_info())
    msg = stream_pb2.StderrAccessLog(
        log_format=sfs_pb2.SubstitutionFormatString(text_format="%RESPONSE_CODE%\n")
    )
    err = StderrAccessLogFactory().parse(msg, None, PATH)
    assert (err.path, render(err)) == ("/dev/stderr", "200\n")
    bad = stream_pb2.StdoutAccessLog(
        log_format=sfs_pb2.SubstitutionFormatString(text_format="%NOPE%")
    )
    with pytest.raises(ConfigError) as e:
        StdoutAccessLogFactory().parse(bad, None, PATH)
    assert e.value.path == f"{PATH}.typed_config.log_format.text_format"


def test_factories_describe_themselves() -> None:
    for factory, name, type_name in (
        (
            FileAccessLogFactory(),
            "envoy.access_loggers.file",
            "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        ),
        (
            StdoutAccessLogFactory(),
            "envoy.access_loggers.stdout",
            "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        ),
        (
            StderrAccessLogFactory(),
            "envoy.access_loggers.stderr",
            "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
        ),
    ):
        assert factory.category is Category.ACCESS_LOGGER
        assert (factory.name, factory.type_names) == (name, (type_name,))


def test_through_translation_the_error_names_the_field() -> None:
    registry = Registry()
    registry.register_all([FileAccessLogFactory(), StdoutAccessLogFactory()])
    ctx = TranslateContext(registry=registry)
    hcm = hcm_pb2.HttpConnectionManager()
    log = hcm.access_log.add(name="envoy.access_loggers.file")
    packed = AnyProto()
    packed.Pack(file_log(path="/x", log_format={"text_format": "%RESPONSE_CODE% %FOO%"}))
    log.typed_config.CopyFrom(packed)
    with pytest.raises(ConfigError) as e:
        access_logs(hcm.access_log, ctx, "static_resources.listeners[0].access_log")
    assert str(e.value) == (
        "static_resources.listeners[0].access_log[0].typed_config.log_format.text_format: "
        "Not supported field in StreamInfo: FOO"
    )
    ok = hcm_pb2.HttpConnectionManager()
    log = ok.access_log.add(name="envoy.access_loggers.stdout")
    packed.Pack(stream_pb2.StdoutAccessLog())
    log.typed_config.CopyFrom(packed)
    (ext,) = access_logs(ok.access_log, ctx, "l.access_log")
    assert isinstance(ext.config, FileAccessLogConfig)
    assert ext.config.path == "/dev/stdout"


# -- writing ------------------------------------------------------------------------------------


def logger_for(
    tmp_path: Path, manager: AccessLogManager, fmt: str = "%REQ(:PATH)%\n", name: str = "access.log"
) -> tuple[FileAccessLogger, Path]:
    path = tmp_path / name
    config = parse_file(path=str(path), log_format={"text_format": fmt})
    return FileAccessLogFactory().build(config, manager), path


def test_lines_are_buffered_until_flushed(tmp_path: Path) -> None:
    manager = AccessLogManager()
    logger, path = logger_for(tmp_path, manager)
    logger.log(make_info("/a"))
    logger.log(make_info("/b"))
    assert path.read_bytes() == b""  # created, nothing written yet
    assert oct(path.stat().st_mode & 0o777) == oct(0o644 & ~_umask())
    manager.flush_all()
    assert path.read_bytes() == b"/a\n/b\n"
    assert (manager.write_buffered, manager.write_completed, manager.write_failed) == (2, 1, 0)
    manager.close()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_full_buffer_is_written_without_a_loop(tmp_path: Path) -> None:
    manager = AccessLogManager(min_flush_size=10)
    logger, path = logger_for(tmp_path, manager)
    logger.log(make_info("/12345"))  # 7 bytes
    assert path.read_bytes() == b""
    logger.log(make_info("/6789"))  # 13 bytes > 10: written now
    assert path.read_bytes() == b"/12345\n/6789\n"
    manager.close()


def test_loggers_of_one_path_share_its_buffer(tmp_path: Path) -> None:
    manager = AccessLogManager()
    first, path = logger_for(tmp_path, manager, "1 %REQ(:PATH)%\n")
    second, _ = logger_for(tmp_path, manager, "2 %REQ(:PATH)%\n")
    first.log(make_info("/a"))
    second.log(make_info("/b"))
    first.log(make_info("/c"))
    manager.close()  # flushes
    assert path.read_bytes() == b"1 /a\n2 /b\n1 /c\n"


def test_output_bytes_are_envoys_bytes(tmp_path: Path) -> None:
    manager = AccessLogManager()
    logger, path = logger_for(tmp_path, manager, "é %REQ(x-bin)%\n")
    info = make_info()
    info.request_headers = Headers({b"x-bin": b"caf\xc3\xa9 \xff"})
    logger.log(info)
    manager.close()
    assert path.read_bytes() == "é ".encode() + b"caf\xc3\xa9 \xff\n"


def test_existing_files_are_appended_to(tmp_path: Path) -> None:
    (tmp_path / "access.log").write_bytes(b"old\n")
    manager = AccessLogManager()
    logger, path = logger_for(tmp_path, manager)
    logger.log(make_info("/new"))
    manager.close()
    assert path.read_bytes() == b"old\n/new\n"


async def _until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_periodic_flush_on_the_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        manager = AccessLogManager(flush_interval=0.05)
        logger, path = logger_for(tmp_path, manager)
        manager.start(asyncio.get_running_loop())
        logger.log(make_info("/tick"))
        assert path.read_bytes() == b""
        await _until(lambda: path.read_bytes() == b"/tick\n")
        assert manager.flushed_by_timer >= 1
        logger.log(make_info("/tock"))
        await _until(lambda: path.read_bytes() == b"/tick\n/tock\n")
        manager.close()

    asyncio.run(scenario())


def test_size_flush_goes_to_the_writer_thread(tmp_path: Path) -> None:
    async def scenario() -> None:
        manager = AccessLogManager(flush_interval=60, min_flush_size=100)
        logger, path = logger_for(tmp_path, manager)
        manager.start(asyncio.get_running_loop())
        for i in range(30):
            logger.log(make_info(f"/{i:04d}"))  # 6 bytes each
        await _until(lambda: len(path.read_bytes()) >= 102)
        assert manager.flushed_by_timer == 0
        manager.close()
        assert path.read_bytes() == b"".join(f"/{i:04d}\n".encode() for i in range(30))

    asyncio.run(scenario())


def test_reopen_after_rotation(tmp_path: Path) -> None:
    async def scenario() -> None:
        manager = AccessLogManager(flush_interval=60)
        logger, path = logger_for(tmp_path, manager)
        manager.start(asyncio.get_running_loop())
        logger.log(make_info("/before"))
        manager.flush_all()
        path.rename(tmp_path / "access.log.1")  # logrotate
        logger.log(make_info("/after"))
        manager.reopen_all()  # SIGUSR1
        await _until(path.exists)
        await _until(lambda: path.read_bytes() == b"/after\n")
        manager.close()
        assert (tmp_path / "access.log.1").read_bytes() == b"/before\n"

    asyncio.run(scenario())


def test_write_errors_are_counted_not_raised(tmp_path: Path) -> None:
    manager = AccessLogManager(min_flush_size=1)
    config = FileAccessLogConfig(path="/dev/full", formatter=compile_text_format("x\n"))
    logger = FileAccessLogFactory().build(config, manager)
    logger.log(make_info())  # ENOSPC
    logger.log(make_info())
    assert manager.write_failed == 2
    manager.close()


def test_format_errors_are_counted_not_raised(tmp_path: Path) -> None:
    manager = AccessLogManager()
    logger, path = logger_for(tmp_path, manager, "%REQ(:PATH)%\n")
    info = make_info()
    info.request_headers = "not a header map"
    logger.log(info)
    assert logger.format_errors == 1
    manager.close()
    assert path.read_bytes() == b""


def test_unopenable_path_is_a_config_error(tmp_path: Path) -> None:
    config = parse_file(path=str(tmp_path / "no" / "such" / "dir.log"))
    with pytest.raises(ConfigError) as e:
        FileAccessLogFactory().build(config, AccessLogManager())
    assert e.value.path == f"{PATH}.typed_config.path"
    assert e.value.reason == (
        f"unable to open file '{tmp_path}/no/such/dir.log': No such file or directory"
    )
    with pytest.raises(ConfigError, match="Is a directory"):
        FileAccessLogFactory().build(parse_file(path=str(tmp_path)), AccessLogManager())


def test_stdout_and_stderr_loggers_write_to_fds_1_and_2(
    capfd: pytest.CaptureFixture[str],
) -> None:
    manager = AccessLogManager()
    fmt = sfs_pb2.SubstitutionFormatString(text_format="%REQ(:PATH)%\n")
    out = StdoutAccessLogFactory().build(
        StdoutAccessLogFactory().parse(stream_pb2.StdoutAccessLog(log_format=fmt), None, PATH),
        manager,
    )
    err = StderrAccessLogFactory().build(
        StderrAccessLogFactory().parse(stream_pb2.StderrAccessLog(log_format=fmt), None, PATH),
        manager,
    )
    file_out = FileAccessLogFactory().build(
        parse_file(path="/dev/stdout", log_format={"text_format": "file %REQ(:PATH)%\n"}),
        manager,
    )
    out.log(make_info("/out"))
    file_out.log(make_info("/also-out"))
    err.log(make_info("/err"))
    manager.close()  # flushes; must not close fds 1 and 2
    captured = capfd.readouterr()
    assert captured.out == "/out\nfile /also-out\n"
    assert captured.err == "/err\n"
    os.write(1, b"")  # still open
