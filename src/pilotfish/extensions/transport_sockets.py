"""Transport sockets: raw_buffer (plain TCP) and the TLS contexts' configuration.

TLS configs are validated here so bootstraps that carry them load; serving TLS (certificates
from files or SDS, mTLS, SAN checks) is the sidecar work item. Until then a bootstrap's TLS
transport sockets are loaded and not served, and an xDS resource with one is refused
(``TranslateContext.accept_unserved_tls``; docs/compatibility.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.extensions.registry import Category, ExtensionFactory
from pilotfish.tls.secrets import SdsSecretRef


@dataclass(frozen=True, slots=True)
class TlsContextConfig:
    downstream: bool
    sni: str = ""
    alpn: tuple[str, ...] = ()
    # Secrets the context takes from SDS, with the config source of each (helper for the SDS
    # subscriptions; the context itself reads them from the SecretStore by name).
    sds_secrets: tuple[SdsSecretRef, ...] = ()


class RawBufferFactory(ExtensionFactory):
    category = Category.TRANSPORT_SOCKET
    name = "envoy.transport_sockets.raw_buffer"
    type_names = ("envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",)

    def parse(self, msg: Any, ctx: Any, path: str) -> None:
        return None


class _TlsFactory(ExtensionFactory):
    category = Category.TRANSPORT_SOCKET
    name = "envoy.transport_sockets.tls"
    downstream = False

    def parse(self, msg: Any, ctx: Any, path: str) -> TlsContextConfig:
        if not getattr(ctx, "accept_unserved_tls", True):
            raise ConfigError(
                f"{path}.typed_config",
                "TLS transport sockets are not served by pilotfish yet: "
                + (
                    "this filter chain would get the clients' TLS bytes as plaintext"
                    if self.downstream
                    else "this upstream would get plaintext where TLS (Istio mTLS or TLS "
                    "origination) is configured"
                ),
            )
        common = msg.common_tls_context
        configs = list(common.tls_certificate_sds_secret_configs)
        if common.HasField("validation_context_sds_secret_config"):
            configs.append(common.validation_context_sds_secret_config)
        if common.HasField("combined_validation_context"):
            cvc = common.combined_validation_context
            if cvc.HasField("validation_context_sds_secret_config"):
                configs.append(cvc.validation_context_sds_secret_config)
        refs = tuple(
            SdsSecretRef(c.name, c.sds_config if c.HasField("sds_config") else None)
            for c in configs
        )
        return TlsContextConfig(
            downstream=self.downstream,
            sni=getattr(msg, "sni", ""),
            alpn=tuple(common.alpn_protocols),
            sds_secrets=refs,
        )


class UpstreamTlsFactory(_TlsFactory):
    type_names = ("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",)


class DownstreamTlsFactory(_TlsFactory):
    type_names = ("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",)
    downstream = True


def transport_socket_factories() -> list[ExtensionFactory]:
    return [RawBufferFactory(), UpstreamTlsFactory(), DownstreamTlsFactory()]
