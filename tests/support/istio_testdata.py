"""Istio's proxy test data (tests/data/istio_proxy, from istio/proxy's ``testdata/``) for tests:
render its Go templates (the subset those files use: ``{{ .Vars.X }}``, ``{{ .Ports.X }}``,
``if``/``else if``/``else``/``end`` with a value or ``eq A "b"``, ``-`` trimming) and compare
its expected metrics with a Prometheus scrape.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).resolve().parents[1] / "data" / "istio_proxy" / "testdata"

_ACTION = re.compile(r"(\s*){{(-?)\s*(.*?)\s*(-?)}}(\s*)", re.S)


def _value(expr: str, vars: dict[str, Any]) -> Any:
    expr = expr.strip()
    if expr.startswith('"'):
        return expr.strip('"')
    if expr.startswith(".Vars.") or expr.startswith(".Ports."):
        return vars.get(expr.split(".", 2)[2], "")
    if expr.startswith(".N"):
        return vars.get("N", 0)
    raise ValueError(f"unsupported template expression {expr!r}")


def _cond(expr: str, vars: dict[str, Any]) -> bool:
    if expr.startswith("eq "):
        a, b = re.findall(r'"[^"]*"|\S+', expr[3:])
        return str(_value(a, vars)) == str(_value(b, vars))
    if expr.startswith("ne "):
        a, b = re.findall(r'"[^"]*"|\S+', expr[3:])
        return str(_value(a, vars)) != str(_value(b, vars))
    return bool(_value(expr, vars))


def render(text: str, vars: dict[str, Any]) -> str:
    """Render a Go template with ``vars`` (both .Vars and .Ports look here)."""
    out: list[str] = []
    # A stack of (emitting now, some branch already taken).
    stack: list[tuple[bool, bool]] = []
    pos = 0

    def emitting() -> bool:
        return all(e for e, _ in stack)

    for m in _ACTION.finditer(text):
        lead, trim_left, action, trim_right, trail = m.groups()
        if emitting():
            out.append(text[pos : m.start()] + ("" if trim_left else lead))
        pos = m.end()
        if action.startswith("if "):
            ok = _cond(action[3:], vars)
            stack.append((ok, ok))
        elif action.startswith("else if "):
            _, taken = stack.pop()
            ok = not taken and _cond(action[8:], vars)
            stack.append((ok, taken or ok))
        elif action == "else":
            _, taken = stack.pop()
            stack.append((not taken, True))
        elif action == "end":
            stack.pop()
        elif emitting():
            head, *pipes = (part.strip() for part in action.split("|"))
            value = str(_value(head, vars))
            for pipe in pipes:
                if pipe == "fill":
                    value = render(value, vars)
                elif pipe.startswith("indent "):
                    pad = " " * int(pipe.split()[1])
                    value = "\n".join(pad + line for line in value.splitlines())
            out.append(value)
        if emitting() and not trim_right:
            out.append(trail)
    if emitting():
        out.append(text[pos:])
    return "".join(out)


def load(relative: str, vars: dict[str, Any] | None = None) -> str:
    return render((DATA / relative).read_text(), vars or {})


def node_metadata(which: str) -> dict[str, Any]:
    """``client`` or ``server`` node metadata (a JSON object body in the template)."""
    text = load(f"{which}_node_metadata.json.tmpl", {"SDPort": 0, "STSPort": 0})
    return json.loads("{" + text + "}")


def expected_metric(relative: str, vars: dict[str, Any]) -> tuple[str, str, float, dict[str, str]]:
    """(name, TYPE, value, labels) of one ``metric/*.yaml.tmpl``."""
    doc = yaml.safe_load(load(f"metric/{relative}", vars))
    (metric,) = doc["metric"]
    kind = doc["type"].lower()
    value = float(metric[kind]["value"])
    labels = {lab["name"]: str(lab["value"]) for lab in metric["label"]}
    return doc["name"], doc["type"], value, labels


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:{(.*)})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """(TYPE by family, samples as (name, labels, value)); label order is kept in the dicts."""
    types: dict[str, str] = {}
    samples = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m is not None, line
        labels = {
            k: v.replace('\\"', '"').replace("\\\\", "\\")
            for k, v in _LABEL.findall(m.group(2) or "")
        }
        samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def find_series(
    samples: list[tuple[str, dict[str, str], float]], name: str, labels: dict[str, str]
) -> list[tuple[dict[str, str], float]]:
    """Samples of ``name`` whose labels are exactly ``labels``."""
    return [(lab, v) for n, lab, v in samples if n == name and lab == labels]
