#!/bin/bash
# nats-server with JetStream (file store) under CONF, the async-nats
# publisher at 1/16/64/256 messages in flight; stops the server it started.
# JSON lines go to stdout.  usage: nats.sh CONF SYSTEM-LABEL N ROUND
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=${PEERBENCH_DIR:-$HERE/../../target/peerbench}
CONF=$HERE/$1; LABEL=$2; N=${3:-20000}; ROUND=${4:-}
W=$D/nats-run; rm -rf "$W"; mkdir -p "$W"; cd "$W"
"$D/nats-server" -c "$CONF" > "$W/server.log" 2>&1 & SP=$!
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null || true' EXIT
for i in $(seq 1 50); do (echo > /dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 0.1; done
for window in 1 16 64 256; do
  n=$N; [ "$window" = 1 ] && n=$((N / 5))
  timeout 300 "$D/jsbench" nats://127.0.0.1:4222 "$n" 1024 "$window" "$LABEL" "$ROUND"
done
