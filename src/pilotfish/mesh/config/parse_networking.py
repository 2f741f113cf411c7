"""``networking.istio.io`` specs (v1, v1beta1 and v1alpha3 share one schema) into the model.

Only structure and types are checked here; meaning (weights, ranges, regexes, references) is
``validate``'s job. Field names are Istio's camelCase, as its CRD schemas require.
"""

from __future__ import annotations

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.reader import Node

__all__ = ["SPEC_PARSERS"]


# --- shared pieces ---------------------------------------------------------------------------


def _string_match(node: Node) -> m.StringMatch:
    found = [k for k in ("exact", "prefix", "regex") if node.has(k)]
    values = {k: node.string(k) for k in ("exact", "prefix", "regex")}
    node.finish()
    if len(found) > 1:
        node.error(found[1], f"only one of exact, prefix or regex may be set (also {found[0]})")
    if not found:
        return m.StringMatch("present")
    kind = found[0]
    return m.StringMatch(kind, values[kind] or "")  # type: ignore[arg-type]


def _opt_string_match(node: Node, key: str) -> m.StringMatch | None:
    sub = node.opt_obj(key)
    return None if sub is None else _string_match(sub)


def _match_map(node: Node, key: str) -> dict[str, m.StringMatch]:
    return {name: _string_match(sub) for name, sub in node.obj_map(key).items()}


def _destination(node: Node) -> m.Destination:
    host = node.req_str("host")
    subset = node.string("subset")
    port = None
    port_node = node.opt_obj("port")
    if port_node is not None:
        port = port_node.integer("number")
        port_node.finish()
    node.finish()
    return m.Destination(host=host, subset=subset, port=port)


def _port(node: Node) -> m.Port:
    port = m.Port(
        number=node.integer("number") or 0,
        protocol=node.string("protocol"),
        name=node.string("name"),
        target_port=node.integer("targetPort"),
    )
    if not node.has("number"):
        node.error("number", "required field is missing")
    node.finish()
    return port


def _selector(node: Node, key: str) -> dict[str, str] | None:
    """``workloadSelector: {labels: {...}}``."""
    sub = node.opt_obj(key)
    if sub is None:
        return None
    labels = sub.str_map("labels")
    sub.finish()
    return labels


# --- VirtualService --------------------------------------------------------------------------


def _http_match(node: Node) -> m.HTTPMatchRequest:
    match = m.HTTPMatchRequest(
        name=node.string("name"),
        uri=_opt_string_match(node, "uri"),
        scheme=_opt_string_match(node, "scheme"),
        method=_opt_string_match(node, "method"),
        authority=_opt_string_match(node, "authority"),
        headers=_match_map(node, "headers"),
        port=node.integer("port"),
        source_labels=node.str_map("sourceLabels"),
        gateways=node.str_list("gateways"),
        query_params=_match_map(node, "queryParams"),
        ignore_uri_case=bool(node.boolean("ignoreUriCase")),
        without_headers=_match_map(node, "withoutHeaders"),
        source_namespace=node.string("sourceNamespace"),
        stat_prefix=node.string("statPrefix"),
    )
    node.finish()
    return match


def _header_ops(node: Node | None) -> m.HeaderOperations | None:
    if node is None:
        return None
    ops = m.HeaderOperations(
        set=node.str_map("set"), add=node.str_map("add"), remove=node.str_list("remove")
    )
    node.finish()
    return ops


def _headers(node: Node | None) -> m.Headers | None:
    if node is None:
        return None
    headers = m.Headers(
        request=_header_ops(node.opt_obj("request")),
        response=_header_ops(node.opt_obj("response")),
    )
    node.finish()
    return headers


def _http_route_destination(node: Node) -> m.HTTPRouteDestination:
    dest = m.HTTPRouteDestination(
        destination=_destination(node.obj("destination")),
        weight=node.integer("weight"),
        headers=_headers(node.opt_obj("headers")),
    )
    if not node.has("destination"):
        node.error("destination", "required field is missing")
    node.finish()
    return dest


def _redirect(node: Node | None) -> m.HTTPRedirect | None:
    if node is None:
        return None
    redirect = m.HTTPRedirect(
        uri=node.string("uri"),
        authority=node.string("authority"),
        port=node.integer("port"),
        derive_port=node.string("derivePort"),
        scheme=node.string("scheme"),
        redirect_code=node.integer("redirectCode"),
    )
    node.finish()
    return redirect


def _rewrite(node: Node | None) -> m.HTTPRewrite | None:
    if node is None:
        return None
    regex = None
    regex_node = node.opt_obj("uriRegexRewrite")
    if regex_node is not None:
        regex = m.RegexRewrite(regex_node.req_str("match"), regex_node.req_str("rewrite"))
        regex_node.finish()
    rewrite = m.HTTPRewrite(
        uri=node.string("uri"), authority=node.string("authority"), uri_regex_rewrite=regex
    )
    node.finish()
    return rewrite


def _direct_response(node: Node | None) -> m.HTTPDirectResponse | None:
    if node is None:
        return None
    body = None
    body_node = node.opt_obj("body")
    if body_node is not None:
        body = body_node.string("string") or body_node.string("bytes")
        body_node.finish()
    if not node.has("status"):
        node.error("status", "required field is missing")
    response = m.HTTPDirectResponse(status=node.integer("status") or 0, body=body)
    node.finish()
    return response


def _delegate(node: Node | None) -> m.Delegate | None:
    if node is None:
        return None
    delegate = m.Delegate(name=node.req_str("name"), namespace=node.string("namespace"))
    node.finish()
    return delegate


def _retries(node: Node | None) -> m.HTTPRetry | None:
    if node is None:
        return None
    retry = m.HTTPRetry(
        attempts=node.integer("attempts"),
        per_try_timeout=node.duration("perTryTimeout"),
        retry_on=node.string("retryOn"),
        retry_remote_localities=node.boolean("retryRemoteLocalities"),
    )
    node.finish()
    return retry


def _legacy_percent(node: Node, key: str) -> float | None:
    """Percentage from ``percentage: {value}``, or the deprecated integer ``percent``."""
    pct = node.percent("percentage")
    legacy = node.integer(key)
    return pct if pct is not None else (None if legacy is None else float(legacy))


def _fault(node: Node | None) -> m.HTTPFaultInjection | None:
    if node is None:
        return None
    delay = abort = None
    delay_node = node.opt_obj("delay")
    if delay_node is not None:
        fixed = delay_node.duration("fixedDelay")
        if not delay_node.has("fixedDelay"):
            delay_node.error("fixedDelay", "required field is missing")
        delay = m.FaultDelay(
            fixed_delay=fixed or 0.0, percentage=_legacy_percent(delay_node, "percent")
        )
        delay_node.finish()
    abort_node = node.opt_obj("abort")
    if abort_node is not None:
        abort = m.FaultAbort(
            http_status=abort_node.integer("httpStatus"),
            grpc_status=abort_node.string("grpcStatus"),
            percentage=abort_node.percent("percentage"),
        )
        abort_node.finish()
    node.finish()
    return m.HTTPFaultInjection(delay=delay, abort=abort)


def _cors(node: Node | None) -> m.CorsPolicy | None:
    if node is None:
        return None
    origins = [_string_match(o) for o in node.objs("allowOrigins")]
    # allowOrigin (exact strings) is the deprecated form of allowOrigins.
    origins += [m.StringMatch("exact", o) for o in node.str_list("allowOrigin")]
    cors = m.CorsPolicy(
        allow_origins=tuple(origins),
        allow_methods=node.str_list("allowMethods"),
        allow_headers=node.str_list("allowHeaders"),
        expose_headers=node.str_list("exposeHeaders"),
        max_age=node.duration("maxAge"),
        allow_credentials=node.boolean("allowCredentials"),
        unmatched_preflights=node.string("unmatchedPreflights"),
    )
    node.finish()
    return cors


def _mirror_policy(node: Node) -> m.HTTPMirrorPolicy:
    policy = m.HTTPMirrorPolicy(
        destination=_destination(node.obj("destination")), percentage=node.percent("percentage")
    )
    node.finish()
    return policy


def _http_route(node: Node) -> m.HTTPRoute:
    mirror_node = node.opt_obj("mirror")
    mirror_pct = node.percent("mirrorPercentage")
    legacy_mirror_pct = node.integer("mirrorPercent")
    route = m.HTTPRoute(
        name=node.string("name"),
        match=tuple(_http_match(n) for n in node.objs("match")),
        route=tuple(_http_route_destination(n) for n in node.objs("route")),
        redirect=_redirect(node.opt_obj("redirect")),
        direct_response=_direct_response(node.opt_obj("directResponse")),
        delegate=_delegate(node.opt_obj("delegate")),
        rewrite=_rewrite(node.opt_obj("rewrite")),
        timeout=node.duration("timeout"),
        retries=_retries(node.opt_obj("retries")),
        fault=_fault(node.opt_obj("fault")),
        mirror=None if mirror_node is None else _destination(mirror_node),
        mirror_percentage=(
            mirror_pct
            if mirror_pct is not None
            else None
            if legacy_mirror_pct is None
            else float(legacy_mirror_pct)
        ),
        mirrors=tuple(_mirror_policy(n) for n in node.objs("mirrors")),
        cors_policy=_cors(node.opt_obj("corsPolicy")),
        headers=_headers(node.opt_obj("headers")),
    )
    node.finish()
    return route


def _route_destination(node: Node) -> m.RouteDestination:
    dest = m.RouteDestination(
        destination=_destination(node.obj("destination")), weight=node.integer("weight")
    )
    node.finish()
    return dest


def _l4_match(node: Node) -> m.L4MatchAttributes:
    match = m.L4MatchAttributes(
        destination_subnets=node.str_list("destinationSubnets"),
        port=node.integer("port"),
        source_labels=node.str_map("sourceLabels"),
        gateways=node.str_list("gateways"),
        source_namespace=node.string("sourceNamespace"),
    )
    node.finish()
    return match


def _tls_match(node: Node) -> m.TLSMatchAttributes:
    match = m.TLSMatchAttributes(
        sni_hosts=node.str_list("sniHosts"),
        destination_subnets=node.str_list("destinationSubnets"),
        port=node.integer("port"),
        source_labels=node.str_map("sourceLabels"),
        gateways=node.str_list("gateways"),
        source_namespace=node.string("sourceNamespace"),
    )
    node.finish()
    return match


def _tcp_route(node: Node) -> m.TCPRoute:
    route = m.TCPRoute(
        match=tuple(_l4_match(n) for n in node.objs("match")),
        route=tuple(_route_destination(n) for n in node.objs("route")),
    )
    node.finish()
    return route


def _tls_route(node: Node) -> m.TLSRoute:
    route = m.TLSRoute(
        match=tuple(_tls_match(n) for n in node.objs("match")),
        route=tuple(_route_destination(n) for n in node.objs("route")),
    )
    node.finish()
    return route


def virtual_service(meta: m.ObjectMeta, spec: Node) -> m.VirtualService:
    return m.VirtualService(
        meta=meta,
        hosts=spec.str_list("hosts"),
        gateways=spec.str_list("gateways"),
        http=tuple(_http_route(n) for n in spec.objs("http")),
        tcp=tuple(_tcp_route(n) for n in spec.objs("tcp")),
        tls=tuple(_tls_route(n) for n in spec.objs("tls")),
        export_to=spec.str_list("exportTo"),
    )


# --- DestinationRule -------------------------------------------------------------------------


def _consistent_hash(node: Node) -> m.ConsistentHashLB:
    cookie = None
    cookie_node = node.opt_obj("httpCookie")
    if cookie_node is not None:
        attributes = []
        for attribute in cookie_node.objs("attributes"):
            attributes.append((attribute.req_str("name"), attribute.string("value") or ""))
            attribute.finish()
        cookie = m.HTTPCookie(
            name=cookie_node.req_str("name"),
            path=cookie_node.string("path"),
            ttl=cookie_node.duration("ttl"),
            attributes=tuple(attributes),
        )
        cookie_node.finish()
    ring = node.integer("minimumRingSize")
    ring_node = node.opt_obj("ringHash")
    if ring_node is not None:
        ring = ring_node.integer("minimumRingSize")
        ring_node.finish()
    maglev = None
    maglev_node = node.opt_obj("maglev")
    if maglev_node is not None:
        maglev = maglev_node.integer("tableSize") or 65537  # Envoy's default table size
        maglev_node.finish()
    lb = m.ConsistentHashLB(
        http_header_name=node.string("httpHeaderName"),
        http_cookie=cookie,
        use_source_ip=bool(node.boolean("useSourceIp")),
        http_query_parameter_name=node.string("httpQueryParameterName"),
        minimum_ring_size=ring,
        maglev_table_size=maglev,
    )
    node.finish()
    return lb


def _load_balancer(node: Node | None) -> m.LoadBalancerSettings | None:
    if node is None:
        return None
    ch = node.opt_obj("consistentHash")
    locality = node.raw("localityLbSetting")
    lb = m.LoadBalancerSettings(
        simple=node.string("simple"),
        consistent_hash=None if ch is None else _consistent_hash(ch),
        locality_lb_setting=locality if isinstance(locality, dict) else None,
        warmup_duration_secs=node.duration("warmupDurationSecs"),
    )
    node.finish()
    return lb


def _connection_pool(node: Node | None) -> m.ConnectionPoolSettings | None:
    if node is None:
        return None
    tcp = http = None
    tcp_node = node.opt_obj("tcp")
    if tcp_node is not None:
        keepalive = None
        ka_node = tcp_node.opt_obj("tcpKeepalive")
        if ka_node is not None:
            keepalive = m.TcpKeepalive(
                probes=ka_node.integer("probes"),
                time=ka_node.duration("time"),
                interval=ka_node.duration("interval"),
            )
            ka_node.finish()
        tcp = m.TCPSettings(
            max_connections=tcp_node.integer("maxConnections"),
            connect_timeout=tcp_node.duration("connectTimeout"),
            tcp_keepalive=keepalive,
            max_connection_duration=tcp_node.duration("maxConnectionDuration"),
            idle_timeout=tcp_node.duration("idleTimeout"),
        )
        tcp_node.finish()
    http_node = node.opt_obj("http")
    if http_node is not None:
        http = m.HTTPSettings(
            http1_max_pending_requests=http_node.integer("http1MaxPendingRequests"),
            http2_max_requests=http_node.integer("http2MaxRequests"),
            max_requests_per_connection=http_node.integer("maxRequestsPerConnection"),
            max_retries=http_node.integer("maxRetries"),
            idle_timeout=http_node.duration("idleTimeout"),
            h2_upgrade_policy=http_node.string("h2UpgradePolicy"),
            use_client_protocol=http_node.boolean("useClientProtocol"),
            max_concurrent_streams=http_node.integer("maxConcurrentStreams"),
        )
        http_node.finish()
    node.finish()
    return m.ConnectionPoolSettings(tcp=tcp, http=http)


def _outlier(node: Node | None) -> m.OutlierDetection | None:
    if node is None:
        return None
    od = m.OutlierDetection(
        consecutive_errors=node.integer("consecutiveErrors"),
        consecutive_5xx_errors=node.integer("consecutive5xxErrors"),
        consecutive_gateway_errors=node.integer("consecutiveGatewayErrors"),
        consecutive_local_origin_failures=node.integer("consecutiveLocalOriginFailures"),
        split_external_local_origin_errors=node.boolean("splitExternalLocalOriginErrors"),
        interval=node.duration("interval"),
        base_ejection_time=node.duration("baseEjectionTime"),
        max_ejection_percent=node.integer("maxEjectionPercent"),
        min_health_percent=node.integer("minHealthPercent"),
    )
    node.finish()
    return od


def _client_tls(node: Node | None) -> m.ClientTLSSettings | None:
    if node is None:
        return None
    tls = m.ClientTLSSettings(
        mode=node.string("mode") or "DISABLE",
        client_certificate=node.string("clientCertificate"),
        private_key=node.string("privateKey"),
        ca_certificates=node.string("caCertificates"),
        credential_name=node.string("credentialName"),
        subject_alt_names=node.str_list("subjectAltNames"),
        sni=node.string("sni"),
        insecure_skip_verify=node.boolean("insecureSkipVerify"),
    )
    node.finish()
    return tls


def _port_policy(node: Node) -> m.PortTrafficPolicy:
    port = None
    port_node = node.opt_obj("port")
    if port_node is not None:
        port = port_node.integer("number")
        port_node.finish()
    policy = m.PortTrafficPolicy(
        port=port,
        load_balancer=_load_balancer(node.opt_obj("loadBalancer")),
        connection_pool=_connection_pool(node.opt_obj("connectionPool")),
        outlier_detection=_outlier(node.opt_obj("outlierDetection")),
        tls=_client_tls(node.opt_obj("tls")),
    )
    node.finish()
    return policy


def _traffic_policy(node: Node | None) -> m.TrafficPolicy | None:
    if node is None:
        return None
    policy = m.TrafficPolicy(
        load_balancer=_load_balancer(node.opt_obj("loadBalancer")),
        connection_pool=_connection_pool(node.opt_obj("connectionPool")),
        outlier_detection=_outlier(node.opt_obj("outlierDetection")),
        tls=_client_tls(node.opt_obj("tls")),
        port_level_settings=tuple(_port_policy(n) for n in node.objs("portLevelSettings")),
    )
    node.ignore("tunnel", "proxyProtocol")  # accepted, not used by the local mesh
    node.finish()
    return policy


def _subset(node: Node) -> m.Subset:
    subset = m.Subset(
        name=node.req_str("name"),
        labels=node.str_map("labels"),
        traffic_policy=_traffic_policy(node.opt_obj("trafficPolicy")),
    )
    node.finish()
    return subset


def destination_rule(meta: m.ObjectMeta, spec: Node) -> m.DestinationRule:
    return m.DestinationRule(
        meta=meta,
        host=spec.req_str("host"),
        traffic_policy=_traffic_policy(spec.opt_obj("trafficPolicy")),
        subsets=tuple(_subset(n) for n in spec.objs("subsets")),
        export_to=spec.str_list("exportTo"),
        workload_selector=_selector(spec, "workloadSelector"),
    )


# --- Gateway ---------------------------------------------------------------------------------


def _server_tls(node: Node | None) -> m.ServerTLSSettings | None:
    if node is None:
        return None
    tls = m.ServerTLSSettings(
        https_redirect=bool(node.boolean("httpsRedirect")),
        mode=node.string("mode"),
        server_certificate=node.string("serverCertificate"),
        private_key=node.string("privateKey"),
        ca_certificates=node.string("caCertificates"),
        credential_name=node.string("credentialName"),
        subject_alt_names=node.str_list("subjectAltNames"),
        min_protocol_version=node.string("minProtocolVersion"),
        max_protocol_version=node.string("maxProtocolVersion"),
        cipher_suites=node.str_list("cipherSuites"),
    )
    node.ignore("credentialNames", "verifyCertificateSpki", "verifyCertificateHash", "caCrl")
    node.finish()
    return tls


def _server(node: Node) -> m.Server:
    if not node.has("port"):
        node.error("port", "required field is missing")
    server = m.Server(
        port=_port(node.obj("port")),
        hosts=node.str_list("hosts"),
        tls=_server_tls(node.opt_obj("tls")),
        name=node.string("name"),
        bind=node.string("bind"),
        default_endpoint=node.string("defaultEndpoint"),
    )
    node.finish()
    return server


def gateway(meta: m.ObjectMeta, spec: Node) -> m.Gateway:
    return m.Gateway(
        meta=meta,
        selector=spec.str_map("selector"),
        servers=tuple(_server(n) for n in spec.objs("servers")),
    )


# --- ServiceEntry, WorkloadEntry, Sidecar ----------------------------------------------------


def _workload(node: Node) -> m.WorkloadEndpoint:
    ports: dict[str, int] = {}
    raw_ports = node.raw("ports") or {}  # a map of port name to number
    if not isinstance(raw_ports, dict):
        node.error("ports", "expected a map of port names to numbers")
    else:
        for name, number in raw_ports.items():
            if isinstance(number, int) and not isinstance(number, bool):
                ports[str(name)] = number
            else:
                node.error(f"ports.{name}", "expected a port number")
    return m.WorkloadEndpoint(
        address=node.string("address"),
        ports=ports,
        labels=node.str_map("labels"),
        network=node.string("network"),
        locality=node.string("locality"),
        weight=node.integer("weight"),
        service_account=node.string("serviceAccount"),
    )


def _endpoint(node: Node) -> m.WorkloadEndpoint:
    endpoint = _workload(node)
    node.finish()
    return endpoint


def service_entry(meta: m.ObjectMeta, spec: Node) -> m.ServiceEntry:
    return m.ServiceEntry(
        meta=meta,
        hosts=spec.str_list("hosts"),
        addresses=spec.str_list("addresses"),
        ports=tuple(_port(n) for n in spec.objs("ports")),
        location=spec.string("location") or "MESH_EXTERNAL",
        resolution=spec.string("resolution") or "NONE",
        endpoints=tuple(_endpoint(n) for n in spec.objs("endpoints")),
        workload_selector=_selector(spec, "workloadSelector"),
        export_to=spec.str_list("exportTo"),
        subject_alt_names=spec.str_list("subjectAltNames"),
    )


def workload_entry(meta: m.ObjectMeta, spec: Node) -> m.WorkloadEntry:
    return m.WorkloadEntry(meta=meta, spec=_workload(spec))


def _egress(node: Node) -> m.IstioEgressListener:
    port_node = node.opt_obj("port")
    listener = m.IstioEgressListener(
        hosts=node.str_list("hosts"),
        port=None if port_node is None else _port(port_node),
        bind=node.string("bind"),
        capture_mode=node.string("captureMode"),
    )
    node.finish()
    return listener


def sidecar(meta: m.ObjectMeta, spec: Node) -> m.Sidecar:
    ingress = [item for _, item in spec.entries("ingress") if isinstance(item, dict)]
    outbound = spec.raw("outboundTrafficPolicy")
    sc = m.Sidecar(
        meta=meta,
        workload_selector=_selector(spec, "workloadSelector"),
        egress=tuple(_egress(n) for n in spec.objs("egress")),
        ingress=tuple(ingress),
        outbound_traffic_policy=outbound if isinstance(outbound, dict) else None,
    )
    spec.ignore("inboundConnectionPool")
    return sc


SPEC_PARSERS = {
    "VirtualService": virtual_service,
    "DestinationRule": destination_rule,
    "Gateway": gateway,
    "ServiceEntry": service_entry,
    "WorkloadEntry": workload_entry,
    "Sidecar": sidecar,
}
