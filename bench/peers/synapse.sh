#!/bin/bash
# A fresh Synapse (SQLite, 127.0.0.1:8008, rate limits off), two users, the
# load script; stops the server it started. JSON lines go to stdout.
# usage: synapse.sh N CONCURRENCIES ROUND     e.g. synapse.sh 2000 1,16 r1
set -euo pipefail
N=${1:-2000}; CONC=${2:-1,16}; ROUND=${3:-}
HERE=$(cd "$(dirname "$0")" && pwd)
D=${PEERBENCH_DIR:-$HERE/../../target/peerbench}; S=$D/synapse-run; PY=$D/venv/bin/python
rm -rf "$S"; mkdir -p "$S"; cd "$S"
$PY -m synapse.app.homeserver --server-name localhost --config-path homeserver.yaml --generate-config --report-stats=no >/dev/null
$PY - <<'PYEOF'
s = open('homeserver.yaml').read()
s = s.replace("    - ::1\n    - 127.0.0.1", "    - 127.0.0.1").replace("      - client\n      - federation", "      - client")
s = s.replace('trusted_key_servers:\n  - server_name: "matrix.org"', 'trusted_key_servers: []\nsuppress_key_server_warning: true')
s += """
rc_message: {per_second: 100000, burst_count: 100000}
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
rc_joins:
  local: {per_second: 1000, burst_count: 1000}
  remote: {per_second: 1000, burst_count: 1000}
"""
open('homeserver.yaml', 'w').write(s)
PYEOF
$PY -m synapse.app.homeserver -c homeserver.yaml > stdout.log 2>&1 & SP=$!
trap 'kill $SP 2>/dev/null; wait $SP 2>/dev/null || true' EXIT
for i in $(seq 1 90); do curl -sf http://127.0.0.1:8008/_matrix/client/versions >/dev/null && break; sleep 1; done
for u in alice bob; do $D/venv/bin/register_new_matrix_user -c homeserver.yaml -u $u -p pw-$u --no-admin http://127.0.0.1:8008 >/dev/null; done
timeout 900 $PY "$HERE/matrix_bench.py" --n "$N" --conc "$CONC" --pingpong 100 --label "$ROUND" | grep '^{'
