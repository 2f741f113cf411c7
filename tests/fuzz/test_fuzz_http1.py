"""The HTTP/1.1 codec and connection manager under fuzzing (targets in targets.py):

* every input of the corpus in the repo (tests/fuzz/corpus/http1: seeds and the inputs that
  once found a bug) runs through the targets: deterministic, a regression test;
* atheris (coverage-guided, libFuzzer) mutates that corpus for a bounded time
  (``PILOTFISH_FUZZ_SECONDS``, 20 s by default; 0 skips it) and must find no failing input.

New inputs go to a temporary directory; a failing one is written there and named in the
failure (copy it into the corpus with the fix).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus" / "http1"
FUZZ_SECONDS = int(os.environ.get("PILOTFISH_FUZZ_SECONDS", "20"))


def run_fuzzer(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HERE / "fuzz_http1.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_corpus_replays_cleanly() -> None:
    result = run_fuzzer("--replay", str(CORPUS), timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"replayed {len(list(CORPUS.iterdir()))} inputs" in result.stdout


@pytest.mark.skipif(FUZZ_SECONDS <= 0, reason="PILOTFISH_FUZZ_SECONDS=0")
def test_coverage_guided_fuzzing_finds_nothing(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    new = tmp_path / "new"
    new.mkdir()
    result = run_fuzzer(
        f"-max_total_time={FUZZ_SECONDS}",
        "-max_len=4096",
        "-timeout=10",
        "-rss_limit_mb=1024",
        f"-dict={HERE / 'http1.dict'}",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
        str(new),
        str(CORPUS),
        timeout=FUZZ_SECONDS + 120,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert result.returncode == 0 and not crashes, (
        f"failing inputs in {tmp_path}: {crashes}\n{result.stderr[-4000:]}"
    )
    assert "Done" in result.stderr
