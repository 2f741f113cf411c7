"""envoy.config.cluster.v3.OutlierDetection -> model, validated as Envoy validates it."""

from __future__ import annotations

from typing import Any

from pilotfish.errors import ConfigError
from pilotfish.model.cluster import OutlierDetection
from pilotfish.xds.translate import common as c

_DEFAULTS = OutlierDetection()
# UInt32Value fields: (name, upper bound from the proto's validation or None).
_UINTS = (
    ("consecutive_5xx", None),
    ("consecutive_gateway_failure", None),
    ("consecutive_local_origin_failure", None),
    ("max_ejection_percent", 100),
    ("enforcing_consecutive_5xx", 100),
    ("enforcing_consecutive_gateway_failure", 100),
    ("enforcing_consecutive_local_origin_failure", 100),
    ("enforcing_success_rate", 100),
    ("enforcing_local_origin_success_rate", 100),
    ("enforcing_failure_percentage", 100),
    ("enforcing_failure_percentage_local_origin", 100),
    ("success_rate_minimum_hosts", None),
    ("success_rate_request_volume", None),
    ("success_rate_stdev_factor", None),
    ("failure_percentage_threshold", 100),
    ("failure_percentage_minimum_hosts", None),
    ("failure_percentage_request_volume", None),
)


def outlier_detection(msg: Any, path: str) -> OutlierDetection:
    values: dict[str, Any] = {}
    for name, bound in _UINTS:
        value = c.uint32_value(msg, name, getattr(_DEFAULTS, name))
        if bound is not None and value > bound:
            raise ConfigError(f"{path}.{name}", f"value must be less than or equal to {bound}")
        values[name] = value
    for name in ("interval", "base_ejection_time", "max_ejection_time"):
        if msg.HasField(name) and c.duration(msg, name, 0.0) <= 0:
            raise ConfigError(f"{path}.{name}", "value must be greater than 0s")
    base = c.duration(msg, "base_ejection_time", _DEFAULTS.base_ejection_time)
    # Unset, max_ejection_time is the default or base_ejection_time, whichever is larger.
    maximum = c.duration(msg, "max_ejection_time", max(_DEFAULTS.max_ejection_time, base))
    if maximum < base:
        raise ConfigError(
            f"{path}.max_ejection_time",
            "outlier detector's max_ejection_time cannot be smaller than base_ejection_time",
        )
    if len(msg.monitors):
        raise ConfigError(
            f"{path}.monitors[0]",
            f"outlier detection monitor extension '{msg.monitors[0].name}' is not supported",
        )
    return OutlierDetection(
        interval=c.duration(msg, "interval", _DEFAULTS.interval),
        base_ejection_time=base,
        max_ejection_time=maximum,
        max_ejection_time_jitter=c.duration(msg, "max_ejection_time_jitter", 0.0),
        split_external_local_origin_errors=msg.split_external_local_origin_errors,
        always_eject_one_host=c.bool_value(msg, "always_eject_one_host", False),
        successful_active_health_check_uneject_host=c.bool_value(
            msg, "successful_active_health_check_uneject_host", True
        ),
        **values,
    )
