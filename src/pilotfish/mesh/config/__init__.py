"""The local mesh's config store: Kubernetes Services and Istio networking objects read from
YAML, validated like ``istioctl validate`` (plus the reference checks of ``istioctl analyze``
that would otherwise fail at request time) and kept in a state directory."""
