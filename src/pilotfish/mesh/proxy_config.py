"""``pilotfishctl proxy-config``: a proxy's config read from its admin ``/config_dump`` (and
``/clusters`` for endpoints), shown in the tables ``istioctl proxy-config`` prints."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from typing import Any


def _get(admin: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=10) as r:
        return json.loads(r.read())


def _configs(admin: str, resource: str) -> list[dict[str, Any]]:
    return list(_get(admin, f"/config_dump?resource={resource}").get("configs", []))


def listener_rows(admin: str) -> list[list[str]]:
    rows = []
    for item in _configs(admin, "dynamic_listeners"):
        listener = (item.get("active_state") or item.get("warming_state") or {}).get("listener")
        if not listener:
            continue
        sa = listener.get("address", {}).get("socket_address", {})
        for chain in listener.get("filter_chains", []):
            match = chain.get("filter_chain_match") or {}
            for f in chain.get("filters", []):
                tc = f.get("typed_config", {})
                if "rds" in tc:
                    dest = f"Route: {tc['rds']['route_config_name']}"
                elif "cluster" in tc:
                    dest = f"Cluster: {tc['cluster']}"
                elif "route_config" in tc:
                    dest = "Inline Route: " + tc["route_config"].get("name", "")
                else:
                    continue
                rows.append(
                    [
                        sa.get("address", ""),
                        str(sa.get("port_value", "")),
                        ",".join(match.get("application_protocols", [])) or "ALL",
                        dest,
                    ]
                )
    return rows


def route_rows(admin: str) -> list[list[str]]:
    rows = []
    for item in _configs(admin, "dynamic_route_configs"):
        rc = item.get("route_config", {})
        for vh in rc.get("virtual_hosts", []):
            domains = vh.get("domains", [])
            shown = domains[0] if domains else ""
            if len(domains) > 1:
                shown += f" + {len(domains) - 1} more..."
            for r in vh.get("routes", []):
                match = r.get("match", {})
                path = next(
                    (
                        f"{k}: {v}" if k != "prefix" else f"{v}*"
                        for k, v in match.items()
                        if k in ("prefix", "path", "safe_regex")
                    ),
                    "/*",
                )
                if isinstance(match.get("safe_regex"), dict):
                    path = match["safe_regex"].get("regex", path)
                vs = (
                    r.get("metadata", {})
                    .get("filter_metadata", {})
                    .get("istio", {})
                    .get("config", "")
                )
                rows.append(
                    [rc.get("name", ""), vh.get("name", ""), shown, path, vs.rsplit("/", 1)[-1]]
                )
    return rows


def cluster_rows(admin: str) -> list[list[str]]:
    rows = []
    for item in _configs(admin, "dynamic_active_clusters") + _configs(admin, "static_clusters"):
        cluster = item.get("cluster", {})
        name = cluster.get("name", "")
        parts = name.split("|")
        if len(parts) == 4:
            direction, port, subset, fqdn = parts
            rows.append([fqdn, port, subset or "-", direction, cluster.get("type", "EDS")])
        else:
            rows.append([name, "-", "-", "-", cluster.get("type", "STATIC")])
    return rows


def endpoint_rows(admin: str) -> list[list[str]]:
    rows = []
    for status in _get(admin, "/clusters?format=json").get("cluster_statuses", []):
        for host in status.get("host_statuses", []):
            sa = host.get("address", {}).get("socket_address", {})
            health = host.get("health_status", {}).get("eds_health_status", "HEALTHY")
            rows.append(
                [f"{sa.get('address')}:{sa.get('port_value')}", health, "OK", status["name"]]
            )
    return rows


def secret_rows(admin: str) -> list[list[str]]:
    """istioctl's ``proxy-config secret``: each SDS secret, its certificate's validity."""
    import base64
    import datetime

    from cryptography import x509

    now = datetime.datetime.now(datetime.UTC)
    rows = []
    for section, status in (("dynamic_active_secrets", "ACTIVE"), ("static_secrets", "STATIC")):
        for item in _configs(admin, section):
            secret = item.get("secret", {})
            if "tls_certificate" in secret:
                kind, source = "Cert Chain", secret["tls_certificate"].get("certificate_chain", {})
            elif "validation_context" in secret:
                kind, source = "CA", secret["validation_context"].get("trusted_ca", {})
            else:
                continue
            pem = base64.b64decode(source["inline_bytes"]) if "inline_bytes" in source else b""
            pem = pem or source.get("inline_string", "").encode()
            try:
                cert = x509.load_pem_x509_certificates(pem)[0]
            except (ValueError, IndexError):
                rows.append([item.get("name", ""), kind, status, "false", "-", "-", "-"])
                continue
            start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
            rows.append(
                [
                    item.get("name", ""),
                    kind,
                    status,
                    str(start <= now < end).lower(),
                    format(cert.serial_number, "x"),
                    end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                ]
            )
    return rows


HEADERS = {
    "listeners": ["ADDRESSES", "PORT", "MATCH", "DESTINATION"],
    "routes": ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"],
    "clusters": ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"],
    "endpoints": ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"],
    "secrets": [
        "RESOURCE NAME",
        "TYPE",
        "STATUS",
        "VALID CERT",
        "SERIAL NUMBER",
        "NOT AFTER",
        "NOT BEFORE",
    ],
}
ROWS = {
    "listeners": listener_rows,
    "routes": route_rows,
    "clusters": cluster_rows,
    "endpoints": endpoint_rows,
    "secrets": secret_rows,
}


def show(admin: str, what: str, output: str = "table") -> None:
    from pilotfish.mesh.ctl import table

    if output == "json":
        print(json.dumps(_get(admin, "/config_dump?include_eds"), indent=2))
        return
    kinds: Sequence[str] = list(HEADERS) if what == "all" else [what]
    for kind in kinds:
        table(ROWS[kind](admin), HEADERS[kind])
        if len(kinds) > 1:
            print()
