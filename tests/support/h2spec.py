"""Run h2spec (the HTTP/2 conformance suite, built by `make h2spec` into .tools/bin) against a
server and read its JUnit report: which cases passed, failed, were skipped."""

from __future__ import annotations

import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
H2SPEC_BIN = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "h2spec"


def run_h2spec(port: int, *, timeout_s: int = 1, host: str = "127.0.0.1") -> dict[str, str]:
    """{case: "passed" | "failed" | "skipped"}; a case is "<section> <description>"."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        subprocess.run(
            [str(H2SPEC_BIN), "-h", host, "-p", str(port), "-o", str(timeout_s), "-j", str(report)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=600,
            check=False,
        )
        # Failure messages quote the peer's bytes verbatim: not always valid XML characters.
        text = report.read_bytes().decode("utf-8", errors="replace")
        root = ET.fromstring(_INVALID_XML.sub("?", text))
    results: dict[str, str] = {}
    for suite in root.iter("testsuite"):
        for i, case in enumerate(suite.iter("testcase"), 1):
            name = f"{suite.get('package')}#{i} {case.get('classname')}"
            if case.find("failure") is not None or case.find("error") is not None:
                results[name] = "failed"
            elif case.find("skipped") is not None:
                results[name] = "skipped"
            else:
                results[name] = "passed"
    return results


def passed(results: dict[str, str]) -> set[str]:
    return {case for case, outcome in results.items() if outcome == "passed"}
