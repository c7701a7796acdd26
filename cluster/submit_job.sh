#!/usr/bin/env bash
# Submit a sarl run to a running Ray cluster with `ray job submit`.
#
#   cluster/submit_job.sh CONFIG OUT_DIR [more `sarl train` options]
#
# CONFIG is a file inside this repository (it travels with the code). OUT_DIR must be an
# absolute path the head node can write and keep (a shared or persistent disk): the job
# runs in a temporary copy of the repository, so a relative path would land there.
# RAY_ADDRESS is the job server (default http://127.0.0.1:8265). Ray 2.60's token
# authentication needs RAY_AUTH_MODE=token in this shell (set here unless you set it) and
# the cluster's token: RAY_AUTH_TOKEN, or a file at RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
# The job's command runs with the PATH of the shell that started the head node, so that
# Python must have sarl_dist's dependencies (the venv activated there, or the image from
# cluster/Dockerfile); the code itself travels as the job's working directory.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG OUT_DIR [sarl train options]" >&2
  exit 2
fi
config=$1 out=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
case $out in
  /*) ;;
  *) echo "OUT_DIR must be absolute (a relative one lands in the job's temporary copy): $out" >&2
     exit 2 ;;
esac
# A config given relative to the caller's directory becomes relative to the repository.
if [ -f "$config" ]; then
  config=$(realpath --relative-to="$root" "$config")
fi
case $config in
  ../*|/*) echo "CONFIG must be inside $root (only the repository travels): $config" >&2
           exit 2 ;;
esac
if [ ! -f "$root/$config" ]; then
  echo "no such config in the repository: $config" >&2
  exit 2
fi
cd "$root"
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
# .venv, .git and .gitignore'd paths are left out by Ray already; the excludes say so here.
exec ray job submit --address "${RAY_ADDRESS:-http://127.0.0.1:8265}" --working-dir . \
  --runtime-env-json '{"excludes": [".venv", "runs", ".git", "*.egg-info"]}' \
  -- python -m sarl_dist.cli.main train "$config" --out "$out" --address auto --no-progress "$@"
