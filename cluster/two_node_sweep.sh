#!/usr/bin/env bash
# A sweep across a 2-node Ray cluster on this one machine: `ray start --head` plus a second
# `ray start --address`, both on 127.0.0.1 with 2 CPUs each, then `sarl sweep` against it.
# It prints the nodes each run's actors were placed on and fails unless runs used both.
#
#   cluster/two_node_sweep.sh [SWEEP.yaml]    (default: configs/sweeps/skill_chain_two_node.yaml)
#
# The cluster has its own temp dir, ports and token file, and is stopped on exit by killing
# only its own processes (`ray stop` would stop every Ray on the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
sweep=${1:-configs/sweeps/skill_chain_two_node.yaml}
venv=$(pwd)/.venv/bin
export PATH="$venv:$PATH" RAY_USAGE_STATS_ENABLED=0
tmp=$(mktemp -d /tmp/sarl-2node-XXXX)
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$tmp/token"
python -c 'import secrets; print(secrets.token_hex(32))' > "$tmp/token"
gcs=$((36000 + RANDOM % 2000)) dash=$((38000 + RANDOM % 2000))

stop() {
  pkill -f "$tmp" || true
  pkill -f ":$gcs " || true
  pkill -f "port=$dash" || true
  sleep 3
  pkill -9 -f "$tmp" || true
  rm -rf "$tmp"
}
trap stop EXIT

# Every port given, so nothing collides with another Ray on this machine.
agent_ports() {
  echo "--dashboard-agent-listen-port $1 --dashboard-agent-grpc-port $(($1 + 1))" \
    "--metrics-export-port $(($1 + 2)) --runtime-env-agent-port $(($1 + 3))"
}
# shellcheck disable=SC2046
ray start --head --node-ip-address 127.0.0.1 --port "$gcs" --dashboard-host 127.0.0.1 \
  --dashboard-port "$dash" --ray-client-server-port $((gcs + 1)) --num-cpus 2 \
  --temp-dir "$tmp/ray" --disable-usage-stats $(agent_ports $((dash + 10))) > "$tmp/head.log"
# shellcheck disable=SC2046
ray start --address "127.0.0.1:$gcs" --node-ip-address 127.0.0.1 --num-cpus 2 \
  --disable-usage-stats $(agent_ports $((dash + 20))) > "$tmp/worker.log"

sarl sweep "$sweep" --address "127.0.0.1:$gcs" --out "$tmp/sweep" --no-progress
python - "$tmp/sweep" <<'EOF'
import json, sys
from pathlib import Path

nodes = {}
for summary in sorted(Path(sys.argv[1]).glob("*/summary.json")):
    nodes[summary.parent.name] = json.loads(summary.read_text())["nodes"]
for run, ids in nodes.items():
    print(f"{run:40s} {' '.join(i[:12] for i in ids)}")
used = {i for ids in nodes.values() for i in ids}
print(f"{len(nodes)} runs on {len(used)} nodes")
sys.exit(0 if len(used) >= 2 else 1)
EOF
