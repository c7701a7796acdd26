"""The names of a run directory's files (its layout: runtime/rundir.py), shared by the
run's writer and its readers (the report, sweeps)."""

CONFIG_FILE, SUMMARY_FILE = "config.yaml", "summary.json"
LOCK_FILE, LOG_FILE, STOPPED_FILE = "run.lock", "run.log", "stopped.json"
EPISODES_FILE = "episodes.jsonl"
