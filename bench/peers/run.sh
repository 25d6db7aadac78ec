#!/bin/bash
# The series behind docs/benchmarks.md: ROUNDS rounds (default 3), each
# running keepwire and every peer one after the other on the same machine
# (alternated, so a slow moment of the machine hits every system alike),
# then keepwire's one-off scenarios, then the report: medians into the doc's
# table and the plot. Everything it starts, it stops.
# usage: bench/peers/run.sh [ROUNDS]
set -euo pipefail
ROUNDS=${1:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
D=${PEERBENCH_DIR:-$ROOT/target/peerbench}; export PEERBENCH_DIR=$D
OUT=$D/results.jsonl; : > "$OUT"
"$HERE/setup.sh"
(cd "$ROOT" && cargo build --release --quiet -p keepwire)
KW=$ROOT/target/release/keepwire
start=$(date +%s)
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r of $ROUNDS"
  "$KW" bench --scenarios throughput,latency --json "$OUT" --label "r$r"
  "$HERE/synapse.sh" 1000 1,16 "r$r" | tee -a "$OUT"
  "$HERE/nats.sh" nats-sync.conf nats-fsync-always 20000 "r$r" | tee -a "$OUT"
  "$HERE/nats.sh" nats-default.conf nats-default 100000 "r$r" | tee -a "$OUT"
  python3 "$HERE/sqlite_bench.py" "$D/sqlite.db" 5000 100000 100 "r$r" | tee -a "$OUT"
done
"$KW" bench --scenarios fanout,connections,capture --json "$OUT" --label once
"$KW" bench report "$OUT" --doc "$ROOT/docs/benchmarks.md" --plot "$ROOT/docs/benchmarks.png"
echo "series finished in $(( $(date +%s) - start )) s; results in $OUT"
