"""Small pieces shared by the translators: Istio's names, durations, percents, the ADS config
source, and turning Envoy's JSON into protos."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from pilotfish.xds import protos
from pilotfish.xds.resource_types import ResourceType

__all__ = [
    "ADS",
    "JSON",
    "cluster_name",
    "duration",
    "million_percent",
    "to_proto",
]

JSON = dict[str, Any]

# Istio's config source for RDS and EDS: ADS, waiting as long as it takes (0s) for the answer.
ADS: JSON = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}


def cluster_name(direction: str, port: int, subset: str | None, host: str) -> str:
    """``outbound|9080|v1|reviews.default.svc.cluster.local``, ``inbound|9080||``."""
    return f"{direction}|{port}|{subset or ''}|{host}"


def duration(seconds: float) -> str:
    """Envoy JSON duration: ``7s``, ``0.500s``."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


def million_percent(percent: float | None) -> JSON:
    """Istio writes percentages (default 100) as a FractionalPercent per million."""
    value = 100.0 if percent is None else percent
    return {"numerator": round(value * 10_000), "denominator": "MILLION"}


def to_proto(rtype: ResourceType, doc: Mapping[str, Any]) -> Message:
    """A resource from Envoy's JSON (nested ``@type`` resolved as Envoy does)."""
    return json_format.ParseDict(protos.load_types_in(dict(doc)), rtype.message())
