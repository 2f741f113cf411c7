"""Istio's extensions that are not Envoy types, and Envoy types Istio uses in a fixed form.

Istio's own types (``stats.PluginConfig``, ``io.istio.http.peer_metadata.Config``, ...) come as
opaque TypedStructs (pilotfish.xds.protos); the simple telemetry ones are listed in builtin.py.
Here are the ones that need a look at their config to be classified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, ExtensionFactory, NotRun

# Istio's plugins compiled into istio-proxy and run on Wasm's "null" VM (no Wasm code is
# loaded: the inline string names the native plugin). Older istiod versions (and EnvoyFilters
# written for them) configure metadata exchange and stats this way.
NULL_VM = "envoy.wasm.runtime.null"
ISTIO_TELEMETRY_PLUGINS = {
    "envoy.wasm.metadata_exchange": "Istio metadata exchange (peer labels for telemetry)",
    "envoy.wasm.stats": "Istio standard metrics",
}


class _WasmFactory(ExtensionFactory):
    """envoy.filters.{http,network}.wasm: only Istio's null-VM telemetry plugins are known: the
    stats plugin runs as ``istio.stats`` (its JSON configuration parsed as stats.PluginConfig),
    the HTTP metadata exchange plugin as ``istio.metadata_exchange`` with Istio headers both
    ways (what the plugin did); the TCP one is accepted, not run. Real Wasm modules
    (WasmPlugin resources) can change traffic and are refused, since pilotfish has no Wasm
    runtime."""

    def parse(self, msg: Any, ctx: Any, path: str) -> Any:
        vm = msg.config.vm_config
        code = vm.code.local.inline_string if vm.code.HasField("local") else ""
        what = ISTIO_TELEMETRY_PLUGINS.get(code)
        if vm.runtime == NULL_VM and what is not None:
            tc = f"{path}.typed_config.config"
            if code == "envoy.wasm.stats":
                from pilotfish.extensions.filters.http.istio_stats import (
                    parse_wasm_configuration,
                )

                config = msg.config.configuration if msg.config.HasField("configuration") else None
                return _Delegated("stats", parse_wasm_configuration(config, ctx, tc))
            if self.category == Category.HTTP_FILTER:
                from pilotfish.extensions.filters.http.peer_metadata import PeerMetadataConfig

                both = ("istio_headers",)
                return _Delegated(
                    "mx",
                    PeerMetadataConfig(
                        downstream_discovery=both,
                        upstream_discovery=both,
                        downstream_propagation=both,
                        upstream_propagation=both,
                    ),
                )
            return NotRun(telemetry=True, why=f"{what}, as an Istio null-VM Wasm plugin")
        raise ConfigError(
            f"{path}.typed_config.config.vm_config",
            "Wasm filters are not supported (pilotfish has no Wasm runtime); only Istio's "
            "null-VM telemetry plugins (" + ", ".join(sorted(ISTIO_TELEMETRY_PLUGINS)) + ") are "
            f"recognised, this one is runtime '{vm.runtime}' code '{code or '(remote)'}'",
        )


@dataclass(frozen=True, slots=True)
class _Delegated:
    """A null-VM plugin's config, run by the native filter ``kind`` names."""

    kind: str  # "stats" | "mx"
    config: Any


class WasmHttpFactory(_WasmFactory):
    category = Category.HTTP_FILTER
    name = "envoy.filters.http.wasm"
    type_names = ("envoy.extensions.filters.http.wasm.v3.Wasm",)

    def build_filter(
        self, config: _Delegated, ctx: Any, name: str, scope: Any
    ) -> tuple[Callable[[], Any], bool]:
        if config.kind == "stats":
            from pilotfish.extensions.filters.http.istio_stats import IstioStatsFactory

            return IstioStatsFactory().build_filter(config.config, ctx, name, scope)
        from pilotfish.extensions.filters.http.peer_metadata import PeerMetadataFactory

        return PeerMetadataFactory().build_filter(config.config, ctx, name, scope)


class WasmNetworkFactory(_WasmFactory):
    category = Category.NETWORK_FILTER
    name = "envoy.filters.network.wasm"
    type_names = ("envoy.extensions.filters.network.wasm.v3.Wasm",)

    def build_tcp_observer(self, config: _Delegated, ctx: Any) -> Any:
        from pilotfish.extensions.filters.http.istio_stats import TcpIstioStats

        return TcpIstioStats(config.config, ctx)


class IstioAuthnFactory(ExtensionFactory):
    """istio_authn (``io.istio.network.authn.Config``, no fields): copies the TLS peer's
    identity into filter state (``io.istio.peer_principal``) for RBAC and telemetry. It lets
    every byte through; pilotfish serves no TLS (so there is no peer identity) and refuses
    RBAC, so nothing would read what it records: a no-op here, left out of the chain. When TLS
    and RBAC come, this must become a real filter."""

    category = Category.NETWORK_FILTER
    name = "istio_authn"
    type_names = ("io.istio.network.authn.Config",)

    def parse(self, msg: Any, ctx: Any, path: str) -> NotRun:
        return NotRun(telemetry=False)
