"""PeerAuthentication (security.istio.io v1 and v1beta1) in the config store: strict parsing
with errors naming the field, Istio's validation, kubectl's short name."""

from __future__ import annotations

import pytest

from pilotfish.mesh.config import model as m
from pilotfish.mesh.config.errors import ConfigValidationError
from pilotfish.mesh.config.store import ConfigStore, resolve_kind


def apply(text: str) -> ConfigStore:
    store = ConfigStore()
    store.apply_yaml(text, "pa.yaml")
    return store


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigValidationError) as e:
        apply(text)
    return e.value.messages


def test_parses_both_versions() -> None:
    store = apply(
        """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system, creationTimestamp: 2024-03-04T05:06:07Z}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls:
    9080: {mode: DISABLE}
    "9443": {}
"""
    )
    mesh, reviews = (
        store.get(m.PeerAuthentication, "istio-system")[0],
        store.get("pa", "default")[0],
    )
    assert (mesh.selector, mesh.mode, mesh.port_level_mtls) == (None, "STRICT", {})
    assert mesh.meta.creation_timestamp == "2024-03-04T05:06:07+00:00"
    assert isinstance(reviews, m.PeerAuthentication)
    assert reviews.selector == {"app": "reviews"}
    assert reviews.mode == "UNSET"
    assert reviews.port_level_mtls == {9080: "DISABLE", 9443: "UNSET"}
    assert resolve_kind("peerauthentications") is m.PeerAuthentication


def test_unknown_fields_and_types_name_the_path() -> None:
    msgs = errors(
        """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: bad}
spec:
  selector: {labels: {app: x}}
  mtls: {mode: 1, strict: true}
  portLevelMtls: {http: {mode: STRICT}}
  mtlss: {}
"""
    )
    where = "pa.yaml (document 1): PeerAuthentication default/bad: "
    assert sorted(msgs) == sorted(
        where + e
        for e in (
            "spec.selector.labels: unknown field",
            "spec.mtls.mode: expected a string, got a number",
            "spec.mtls.strict: unknown field",
            "spec.portLevelMtls.http: expected a port number",
            "spec.mtlss: unknown field",
        )
    )


def test_wrong_api_group() -> None:
    (msg,) = errors(
        "apiVersion: networking.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x}\n"
    )
    assert msg.endswith(
        "apiVersion: PeerAuthentication needs one of security.istio.io/v1, "
        "security.istio.io/v1beta1"
    )


def test_validation_as_istio() -> None:
    msgs = errors(
        """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns}
spec:
  mtls: {mode: STRICTER}
  portLevelMtls: {9080: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: w}
spec:
  selector: {matchLabels: {app: "bad value!"}}
  portLevelMtls: {0: {mode: NONE}}
"""
    )
    text = "\n".join(msgs)
    assert "PeerAuthentication default/ns: spec.mtls.mode: 'STRICTER' is not one of" in text
    assert "PeerAuthentication default/ns: spec.portLevelMtls: portLevelMtls requires a" in text
    assert "default/w: spec.selector.matchLabels.app: invalid label value" in text
    assert "default/w: spec.portLevelMtls.0: port number 0 is out of range 1..65535" in text
    assert "default/w: spec.portLevelMtls.0.mode: 'NONE' is not one of" in text
    assert len(msgs) == 5


def test_bad_creation_timestamp() -> None:
    (msg,) = errors(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: x, creationTimestamp: yesterday}\nspec: {}\n"
    )
    assert "metadata.creationTimestamp: invalid timestamp 'yesterday'" in msg


def test_state_directory_round_trip(tmp_path: object) -> None:
    from pathlib import Path

    state = Path(str(tmp_path))
    store = ConfigStore(state)
    store.apply_yaml(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: x, creationTimestamp: 2024-03-04T05:06:07Z}\nspec: {mtls: {mode: DISABLE}}\n"
    )
    (again,) = ConfigStore(state).get(m.PeerAuthentication)
    assert again == store.get(m.PeerAuthentication)[0]
