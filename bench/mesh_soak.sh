#!/bin/sh
# The mesh tests N times in a row (default 20) while stress-ng keeps one core busy: the
# check that `up`, `down`/`up` and `apply` return only when the mesh serves (issue 10, item
# 7). Not part of `make test` (pytest collects tests/ only, and no test_*.py here).
#
#   sudo sh bench/mesh_soak.sh [N] [pytest file ...]
#
# Prints one line per run and the count of passing runs; the logs stay in $OUT.
set -u
N=${1:-20}
[ $# -gt 0 ] && shift
FILES=${*:-tests/integration/test_mesh_bookinfo.py tests/integration/test_mesh_capture.py}
OUT=${OUT:-$(mktemp -d /tmp/mesh-soak.XXXXXX)}
cd "$(dirname "$0")/.."
command -v stress-ng >/dev/null || { echo "stress-ng is not installed (apt-get install -y stress-ng)"; exit 2; }
# One CPU hog, bounded: never outlives the loop by more than its timeout.
stress-ng --cpu 1 --timeout "$((N * 400))s" >/dev/null 2>&1 &
STRESS=$!
trap 'kill $STRESS 2>/dev/null' EXIT INT TERM
passed=0
i=1
while [ "$i" -le "$N" ]; do
    start=$(date +%s)
    if .venv/bin/pytest -q -p no:randomly -p no:cacheprovider $FILES >"$OUT/run$i.log" 2>&1; then
        passed=$((passed + 1))
        verdict=passed
    else
        verdict="FAILED (see $OUT/run$i.log)"
    fi
    echo "run $i: $verdict in $(( $(date +%s) - start )) s: $(tail -1 "$OUT/run$i.log")"
    i=$((i + 1))
done
echo "$passed of $N runs passed under stress-ng --cpu 1 (logs in $OUT)"
[ "$passed" -eq "$N" ]
