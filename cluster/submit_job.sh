#!/usr/bin/env bash
# Submit a sarl run to a running Ray cluster with `ray job submit`.
#
#   cluster/submit_job.sh CONFIG OUT_DIR [more `sarl train` options]
#
# OUT_DIR must be a path the head node can write and keep (a shared or persistent
# disk), since the job's working directory is a temporary copy. RAY_ADDRESS is the job
# server (default http://127.0.0.1:8265). `ray start --head` in Ray 2.60 turns token
# authentication on; the submitting shell then needs RAY_AUTH_MODE=token (set here
# unless you set it) and the cluster's token (~/.ray or RAY_AUTH_TOKEN).
# The cluster's Python must have sarl_dist's dependencies installed (pip install .);
# the code itself travels as the job's working directory.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG OUT_DIR [sarl train options]" >&2
  exit 2
fi
config=$1 out=$2
shift 2
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
exec ray job submit --address "${RAY_ADDRESS:-http://127.0.0.1:8265}" --working-dir . \
  --runtime-env-json '{"excludes": [".venv", "runs", ".git", "*.egg-info"]}' \
  -- python -m sarl_dist.cli.main train "$config" --out "$out" --address auto --no-progress "$@"
