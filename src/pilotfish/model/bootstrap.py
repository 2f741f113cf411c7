"""The bootstrap: envoy.config.bootstrap.v3.Bootstrap as the server uses it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pilotfish.model.cluster import Cluster
from pilotfish.model.common import Address, Locality, StringMatcher, TypedExtension
from pilotfish.model.listener import Listener


@dataclass(frozen=True, slots=True)
class Node:
    id: str = ""
    cluster: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    locality: Locality = Locality()


@dataclass(frozen=True, slots=True)
class Admin:
    address: Address | None
    access_log: tuple[TypedExtension, ...] = ()
    profile_path: str = ""


@dataclass(frozen=True, slots=True)
class StatsTag:
    name: str
    regex: str = ""
    fixed_value: str = ""


@dataclass(frozen=True, slots=True)
class StatsMatcher:
    """Which stats exist: reject_all, or an inclusion or exclusion list (Envoy's StatsMatcher)."""

    reject_all: bool = False
    inclusion: tuple[StringMatcher, ...] | None = None
    exclusion: tuple[StringMatcher, ...] | None = None


@dataclass(frozen=True, slots=True)
class StatsConfig:
    tags: tuple[StatsTag, ...] = ()
    use_all_default_tags: bool = True
    matcher: StatsMatcher = StatsMatcher()
    histogram_buckets: tuple[float, ...] | None = None
    flush_interval: float = 5.0


@dataclass(frozen=True, slots=True)
class Bootstrap:
    node: Node = Node()
    admin: Admin | None = None
    listeners: tuple[Listener, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    stats: StatsConfig = StatsConfig()
    runtime: dict[str, Any] = field(default_factory=dict)  # merged static layers
    max_downstream_connections: int | None = None  # overload manager / runtime
    log_format: str | None = None  # application_log_config text_format (spdlog syntax)
    log_format_json: dict[str, Any] | None = None
    # The ADS and LDS/CDS sources, kept as protos for the xDS layer.
    dynamic_resources: Any = None
    static_secrets: tuple[Any, ...] = ()
    local_cluster_name: str = ""
    outlier_event_log_path: str = ""
