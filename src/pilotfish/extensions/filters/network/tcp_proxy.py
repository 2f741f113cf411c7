"""envoy.filters.network.tcp_proxy: config validation.

The runtime is ``pilotfish.net.tcp_proxy``."""

from __future__ import annotations

from typing import Any, ClassVar

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.model.http import TcpProxyConfig
from pilotfish.model.route import HashPolicy
from pilotfish.xds.translate import common as c
from pilotfish.xds.translate.listener import access_logs


class TcpProxyFactory(ExtensionFactory):
    category = Category.NETWORK_FILTER
    name = "envoy.filters.network.tcp_proxy"
    type_names = ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",)
    terminal: ClassVar[bool] = True

    def parse(self, msg: Any, ctx: Any, path: str) -> TcpProxyConfig:
        tc = f"{path}.typed_config"
        if not msg.stat_prefix:
            raise ConfigError(f"{tc}.stat_prefix", "value length must be at least 1")
        for unsupported in ("tunneling_config", "on_demand"):
            if msg.HasField(unsupported):
                raise ConfigError(
                    f"{tc}.{unsupported}", f"{unsupported} is not supported by pilotfish"
                )
        kind = msg.WhichOneof("cluster_specifier")
        cluster = ""
        weighted: list[tuple[str, int]] = []
        if kind == "cluster":
            if not msg.cluster:
                raise ConfigError(f"{tc}.cluster", "value length must be at least 1")
            cluster = msg.cluster
        elif kind == "weighted_clusters":
            for i, wc in enumerate(msg.weighted_clusters.clusters):
                if not wc.name:
                    raise ConfigError(
                        f"{tc}.weighted_clusters.clusters[{i}].name",
                        "value length must be at least 1",
                    )
                if wc.weight < 1:
                    raise ConfigError(
                        f"{tc}.weighted_clusters.clusters[{i}].weight",
                        "value must be greater than or equal to 1",
                    )
                weighted.append((wc.name, wc.weight))
            if not weighted:
                raise ConfigError(
                    f"{tc}.weighted_clusters.clusters", "value must contain at least 1 item(s)"
                )
        else:
            raise ConfigError(tc, "cluster_specifier is required (cluster or weighted_clusters)")
        attempts = c.uint32_value(msg, "max_connect_attempts", 1)
        if attempts < 1:
            raise ConfigError(
                f"{tc}.max_connect_attempts", "value must be greater than or equal to 1"
            )
        flush = 0.0
        if msg.HasField("access_log_options"):
            flush = c.duration(msg.access_log_options, "access_log_flush_interval", 0.0)
        return TcpProxyConfig(
            hash_policy=_hash_policy(msg.hash_policy, f"{tc}.hash_policy"),
            stat_prefix=msg.stat_prefix,
            cluster=cluster,
            weighted_clusters=tuple(weighted),
            idle_timeout=c.duration(msg, "idle_timeout", 3600.0),
            max_connect_attempts=attempts,
            max_downstream_connection_duration=c.duration(
                msg, "max_downstream_connection_duration", 0.0
            ),
            access_log=access_logs(msg.access_log, ctx, f"{tc}.access_log"),
            access_log_flush_interval=flush,
        )

    def build(self, config: TcpProxyConfig, ctx: Any, *, listener_prefix: str = "") -> Any:
        from pilotfish.net.tcp_proxy import TcpProxy

        return TcpProxy(config, ctx)


def _hash_policy(policies: Any, path: str) -> tuple[HashPolicy, ...]:
    """envoy.type.v3.HashPolicy (at most one): the client's IP or a filter state object."""
    if len(policies) > 1:
        raise ConfigError(path, "value must contain no more than 1 item(s)")
    out = []
    for i, hp in enumerate(policies):
        kind = hp.WhichOneof("policy_specifier")
        if kind == "source_ip":
            out.append(HashPolicy("connection_properties", "source_ip"))
        elif kind == "filter_state":
            if not hp.filter_state.key:
                raise ConfigError(
                    f"{path}[{i}].filter_state.key", "value length must be at least 1 characters"
                )
            out.append(HashPolicy("filter_state", hp.filter_state.key))
        else:
            raise ConfigError(f"{path}[{i}]", "policy_specifier is required")
    return tuple(out)
