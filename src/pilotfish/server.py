"""The Server: builds the managers from the bootstrap, binds everything before serving, reports
Envoy's server state, and drains and exits on SIGTERM/SIGINT or /quitquitquit."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import time
from typing import Any

import uvloop

from pilotfish.cli import Options
from pilotfish.context import ServerContext, detect_local_address
from pilotfish.drain import IMMEDIATE, DrainManager
from pilotfish.errors import ConfigError
from pilotfish.net.listener import ListenerManager
from pilotfish.stats.store import Store
from pilotfish.tls.secrets import SecretStore
from pilotfish.upstream.cluster_manager import ClusterManager
from pilotfish.upstream.outlier import EventLog
from pilotfish.xds.bootstrap import LoadedBootstrap

log = logging.getLogger("pilotfish.main")


class ServerState(enum.IntEnum):
    """Envoy's server.state gauge values."""

    LIVE = 0
    DRAINING = 1
    PRE_INITIALIZING = 2
    INITIALIZING = 3


class Server:
    def __init__(self, options: Options, bootstrap: LoadedBootstrap) -> None:
        self.options = options
        self.bootstrap = bootstrap
        self.model = bootstrap.model
        self.start_time = time.time()
        self.state = ServerState.PRE_INITIALIZING
        self.exit_code = 0
        self._shutdown: asyncio.Event | None = None
        self.ctx: ServerContext | None = None
        self.listener_manager: ListenerManager | None = None
        self.cluster_manager: ClusterManager | None = None
        self.admin: Any = None
        self.stats: Store | None = None
        self.xds: Any = None  # xds.manager.XdsManager, with dynamic_resources
        self.sds: Any = None  # xds.sds.SdsManager: static secrets and SDS subscriptions
        self._stopping = False  # SIGTERM/SIGINT or /quitquitquit: draining to exit
        self._drain_sequence = False  # /drain_listeners?graceful (or skip_exit) started

    def run(self) -> int:
        try:
            return uvloop.run(self._main())
        except KeyboardInterrupt:
            return 0

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self._shutdown = asyncio.Event()
        opts = self.options
        model = self.model
        stats = Store(model.stats)
        self.stats = stats
        cm = ClusterManager(stats, loop)
        # Filled by the SDS manager (static secrets and SDS subscriptions, _start_sds).
        cm.secrets = secrets = SecretStore()
        if model.outlier_event_log_path:
            cm.outlier_event_log = EventLog(model.outlier_event_log_path)
        self.cluster_manager = cm
        access_logs = _access_log_manager(opts)
        ctx = ServerContext(
            loop=loop,
            stats=stats,
            cluster_manager=cm,
            access_logs=access_logs,
            local_address=detect_local_address(opts.local_address_ip_version),
            node_id=model.node.id,
            node_cluster=model.node.cluster,
            node_metadata=model.node.metadata,
            runtime=model.runtime,
            drain_time=float(opts.drain_time_s),
            secrets=secrets,
        )
        ctx.drain = DrainManager(loop, opts.drain_strategy, opts.drain_time_s)
        self.ctx = ctx
        if access_logs is not None:
            access_logs.start(loop)
        self._server_stats()
        self._set_state(ServerState.PRE_INITIALIZING)
        for cluster in model.clusters:
            cm.add_or_update(cluster)
        try:
            static_secret_refs = self._start_sds()
        except ConfigError as e:
            log.critical("%s", e)
            print(f"error: {e}", flush=True)
            return 1
        lm = ListenerManager(ctx)
        lm.max_connections = model.max_downstream_connections
        self.listener_manager = lm
        # Bind everything first: a port in use is an error before anything serves.
        from pilotfish.admin.server import AdminServer

        try:
            built = [lm.build(listener) for listener in model.listeners]
            if model.admin is not None and model.admin.address is not None:
                self.admin = AdminServer(self, model.admin)
                self.admin.bind()
        except OSError as e:
            log.critical("%s", e.strerror or e)
            print(f"error: {e.strerror or e}", flush=True)
            return 1
        if self.admin is not None:
            await self.admin.start()
            self._write_admin_address()
        for listener in built:
            lm.listeners[listener.name] = listener
            lm.stats_added.value += 1
            lm.stats_create_success.value += 1
        lm.gauge_active.set(len(lm.listeners))
        self._install_signals(loop)
        # Envoy's order: PRE_INITIALIZING until the cluster manager (static clusters, then
        # CDS) is initialized, INITIALIZING until listeners (LDS) are, then workers start.
        initialized = asyncio.Event()
        cm.when_initialized(initialized.set)
        await initialized.wait()
        if model.dynamic_resources is not None:
            from pilotfish.xds.manager import XdsManager

            self.xds = XdsManager(self)
            try:
                self.xds.start()
            except ConfigError as e:
                log.critical("%s", e)
                print(f"error: {e}", flush=True)
                return 1
            await self._unless_shutdown(self.xds.initialize_clusters())
            if not self._shutdown.is_set():
                self._set_state(ServerState.INITIALIZING)
                await self._unless_shutdown(self.xds.initialize_listeners())
        if not self._shutdown.is_set():
            # Envoy's init manager: static listeners and clusters wait for their secrets.
            await self._unless_shutdown(self.sds.initialize(static_secret_refs))
        if not self._shutdown.is_set():
            for listener in built:
                await listener.start()
            lm.gauge_workers_started.set(1)
            self.h_initialization_time.record((time.time() - self.start_time) * 1000)
            self._set_state(ServerState.LIVE)
            log.info("all clusters initialized; pilotfish is live")
        await self._shutdown.wait()
        await self._drain_and_stop()
        return self.exit_code

    def _start_sds(self) -> list[Any]:
        """Static secrets into the store, and the SDS subscriptions of static listeners and
        clusters; returns those references."""
        from pilotfish.xds.manager import static_secret_refs
        from pilotfish.xds.sds import SdsManager

        assert self.ctx is not None
        self.sds = SdsManager(self, self.ctx.secrets)
        self.sds.load_static(self.model.static_secrets)
        refs = list(static_secret_refs(self.model))
        self.sds.want(refs, "static_resources")
        return refs

    async def _unless_shutdown(self, step: Any) -> None:
        """Run an initialization step, abandoned if the server is told to stop meanwhile."""
        shutdown = self._shutdown
        assert shutdown is not None
        task = asyncio.ensure_future(step)
        stop = asyncio.ensure_future(shutdown.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (task, stop):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending

    # -- state and stats ------------------------------------------------------------------------

    def _server_stats(self) -> None:
        """Envoy's server.* and runtime.* stats, the same ones used (or not) as in Envoy with
        hot restart disabled (so no server.hot_restart_generation)."""
        assert self.stats is not None
        s = self.stats.scope("server.")
        self.g_state = s.gauge("state", accumulate=False)
        self.g_live = s.gauge("live", accumulate=False)
        s.gauge("concurrency").set(1)
        epoch = s.gauge("hot_restart_epoch")
        if self.options.restart_epoch:
            epoch.set(self.options.restart_epoch)
        s.gauge("version").set(0)  # Envoy: the build's revision as a number; pilotfish has none
        self.g_uptime = s.gauge("uptime")
        self.g_total_connections = s.gauge("total_connections")
        s.gauge("parent_connections")
        self.g_memory_allocated = s.gauge("memory_allocated")
        self.g_memory_heap_size = s.gauge("memory_heap_size")
        self.g_memory_physical_size = s.gauge("memory_physical_size")
        s.gauge("days_until_first_cert_expiring").set((1 << 32) - 1)  # no certificate
        s.gauge("seconds_until_first_ocsp_response_expiring")
        s.gauge("compilation_settings.fips_mode").set(0)
        s.counter("debug_assertion_failures")
        s.counter("envoy_bug_failures")
        s.counter("envoy_notifications")
        s.counter("dynamic_unknown_fields").inc(0)
        s.counter("static_unknown_fields").inc(0)
        s.counter("wip_protos").inc(0)
        s.counter("dropped_stat_flushes")
        s.gauge("stats_recent_lookups").set(0)
        for thread in ("main_thread", "worker_0"):
            s.counter(f"{thread}.watchdog_miss")
            s.counter(f"{thread}.watchdog_mega_miss")
        self.h_initialization_time = s.histogram("initialization_time_ms")
        self._runtime_stats()

    def _runtime_stats(self) -> None:
        """runtime.*: the layers and keys of the bootstrap's layered_runtime. Envoy loads its
        snapshot twice at startup, finding no override directory either time."""
        assert self.stats is not None
        r = self.stats.scope("runtime.")
        layers = self.runtime_layers()
        r.gauge("admin_overrides_active")
        r.gauge("deprecated_feature_seen_since_process_start")
        r.counter("deprecated_feature_use")
        r.counter("load_error")
        r.counter("load_success").inc(2)
        r.gauge("num_keys").set(len({key for _, values in layers for key in values}))
        r.gauge("num_layers").set(len(layers))
        r.counter("override_dir_exists")
        r.counter("override_dir_not_exists").inc(2)

    def runtime_layers(self) -> list[tuple[str, dict[str, str]]]:
        """(name, key -> value text) of each layered_runtime layer, as Envoy's /runtime shows
        them: static layers flattened to dotted keys; the other layers (admin, disk, RTDS)
        hold nothing in pilotfish."""
        from google.protobuf import json_format

        out: list[tuple[str, dict[str, str]]] = []
        for layer in self.bootstrap.proto.layered_runtime.layers:
            values: dict[str, str] = {}
            if layer.HasField("static_layer"):
                _flatten(json_format.MessageToDict(layer.static_layer), "", values)
            out.append((layer.name, values))
        return out

    def refresh_gauges(self) -> None:
        """Gauges computed on read (admin), not kept current on every event."""
        self.g_uptime.set(int(time.time() - self.start_time))
        if self.listener_manager is not None:
            self.g_total_connections.set(self.listener_manager.total_connections)
        rss = _rss_bytes()
        self.g_memory_allocated.set(rss)
        self.g_memory_heap_size.set(rss)
        self.g_memory_physical_size.set(rss)

    @property
    def reported_state(self) -> ServerState:
        """The state /ready, /server_info and server.state report (Envoy's
        Utility::serverState): an initialized server fails health checks as DRAINING."""
        if self.state is ServerState.LIVE and self.ctx is not None and self.ctx.health_check_failed:
            return ServerState.DRAINING
        return self.state

    def _set_state(self, state: ServerState) -> None:
        self.state = state
        self._publish_state()

    def _publish_state(self) -> None:
        state = self.reported_state
        self.g_state.set(int(state))
        self.g_live.set(1 if state is ServerState.LIVE else 0)

    def _update_draining(self) -> None:
        """Connections close after their current response (``connection: close``) while the
        server exits, drains gracefully, or fails health checks (Envoy's drainClose())."""
        ctx = self.ctx
        assert ctx is not None
        ctx.drain.health_check_failed = ctx.health_check_failed
        ctx.draining = ctx.drain.draining or ctx.health_check_failed

    def fail_health_checks(self, failed: bool) -> None:
        """/healthcheck/fail and /healthcheck/ok: the server reports DRAINING (server.live 0)
        and drain-closes connections, but keeps serving."""
        assert self.ctx is not None
        self.ctx.health_check_failed = failed
        self._update_draining()
        self._publish_state()

    def _write_admin_address(self) -> None:
        path = self.options.admin_address_path
        if path and self.admin is not None:
            with open(path, "w") as f:
                f.write(self.admin.address_text())

    # -- shutdown -------------------------------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_logs)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # Envoy ignores SIGHUP

    def _on_signal(self, sig: int) -> None:
        if self._shutdown is not None and self._shutdown.is_set():
            log.warning("second signal: exiting now")
            os._exit(self.exit_code)
        log.warning("caught %s, draining", signal.Signals(sig).name)
        self.shutdown()

    def _reopen_logs(self) -> None:
        if self.ctx is not None and self.ctx.access_logs is not None:
            self.ctx.access_logs.reopen_all()

    def shutdown(self) -> None:
        if self._shutdown is not None:
            self._shutdown.set()

    def drain_listeners(
        self, *, inbound_only: bool = False, graceful: bool = False, skip_exit: bool = False
    ) -> None:
        """/drain_listeners, as Envoy's handler: the server stays LIVE. Without ``graceful``
        the listeners stop accepting at once (open connections go on). With it (or with
        ``skip_exit``), a drain sequence starts: connections are drain-closed (after their
        current response; every listener's, or the inbound ones' with ``inbound_only``) and,
        unless ``skip_exit``, the listeners stop accepting after ``--drain-time-s``. A second
        drain sequence is ignored."""
        lm = self.listener_manager
        ctx = self.ctx
        assert lm is not None and ctx is not None
        if not (graceful or skip_exit):
            lm.stop_listeners(inbound_only=inbound_only)
            return
        if self._drain_sequence:
            return
        self._drain_sequence = True
        # Responses close their connections as the drain strategy says (idle keep-alive
        # connections are not closed at once: their clients may be sending right now).
        if inbound_only:
            ctx.drain.start(lm.handlers(inbound_only=True))
        else:
            ctx.drain.start()
        self._update_draining()
        if skip_exit:
            return

        def stop() -> None:
            lm.stop_listeners(inbound_only=inbound_only)
            if inbound_only:  # also the connections accepted during the drain period
                lm.drain_connections(inbound_only=True)

        ctx.loop.call_later(self.options.drain_time_s, stop)

    async def _drain_and_stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded by --drain-time-s), exit."""
        self._set_state(ServerState.DRAINING)
        ctx = self.ctx
        lm = self.listener_manager
        assert ctx is not None and lm is not None
        self._stopping = True
        ctx.drain.start()
        self._update_draining()
        immediate = self.options.drain_strategy == IMMEDIATE
        if immediate:
            lm.drain_all()
        # Gradual: the listeners keep accepting while a growing share of responses close
        # their connections, so that clients move away without failed requests; what is left
        # when the drain time is over is closed. The drain ends early once no connection is
        # open (gradual: for a second, since closed connections' clients come back at once).
        loop = ctx.loop
        deadline = loop.time() + self.options.drain_time_s
        idle_since: float | None = None
        while loop.time() < deadline:
            if lm.total_connections > 0:
                idle_since = None
            elif immediate:
                break
            elif idle_since is None:
                idle_since = loop.time()
            elif loop.time() - idle_since >= 1.0:
                break
            await asyncio.sleep(0.05)
        lm.stop_all()
        if self.xds is not None:
            await self.xds.stop()
        if self.sds is not None:
            await self.sds.stop()
        if self.admin is not None:
            self.admin.stop()
        if self.cluster_manager is not None:
            self.cluster_manager.close()
        if ctx.access_logs is not None:
            ctx.access_logs.close()


def _access_log_manager(opts: Options) -> Any:
    try:
        from pilotfish.accesslog.manager import AccessLogManager
    except ImportError:
        return None
    return AccessLogManager(
        flush_interval=opts.file_flush_interval_msec / 1000,
        min_flush_size=opts.file_flush_min_size_kb * 1024,
    )


def _flatten(doc: dict[str, Any], prefix: str, out: dict[str, str]) -> None:
    for key, value in doc.items():
        name = prefix + key
        if isinstance(value, dict):
            _flatten(value, name + ".", out)
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, float) and value.is_integer():
            out[name] = str(int(value))
        else:
            out[name] = str(value)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
