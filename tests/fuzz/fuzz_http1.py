"""Coverage-guided fuzzing (atheris, libFuzzer) of the HTTP/1.1 codec and the connection
manager: ``python tests/fuzz/fuzz_http1.py [libFuzzer flags] NEW_CORPUS_DIR SEED_CORPUS_DIR``.

``--replay DIR...`` runs every file of the corpus through the targets once, without atheris
(the regression part, deterministic). tests/fuzz/test_fuzz_http1.py runs both, bounded.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.targets import run, use_python_sources


def replay(dirs: list[str]) -> int:
    count = 0
    for d in dirs:
        for path in sorted(Path(d).iterdir()):
            data = path.read_bytes()
            try:
                run(data)
            except Exception:
                print(f"failing input: {path}", file=sys.stderr)
                raise
            count += 1
    print(f"replayed {count} inputs")
    return 0


def main() -> int:
    use_python_sources()
    if sys.argv[1:2] == ["--replay"]:
        import pilotfish.codec.http1

        return replay(sys.argv[2:])
    import atheris

    with atheris.instrument_imports(include=["pilotfish"]):
        import pilotfish.codec.http1
        import pilotfish.http.conn_manager
        import pilotfish.http.path_normalization
        import pilotfish.http.router  # noqa: F401
    atheris.Setup(sys.argv, run)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
