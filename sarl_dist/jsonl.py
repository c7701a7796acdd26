"""JSON lines: the format of a run's logs (episodes, evaluations, labels, failures, the
VLM's answers). A leaf of the package: runs write them, reports and sweeps read them."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def read_jsonl(path: Path, torn_ok: bool = False) -> list[dict]:
    """One record per line; none if the file is absent. With `torn_ok`, a line a crash left
    half-written is skipped (logged) instead of refused."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if not torn_ok:
                raise
            log.warning("%s: skipping a torn line", path)
    return records


def append_jsonl(path: Path, records: Iterable[dict], durable: bool = False) -> None:
    """Append records; `durable`: on disk (fsync) before this returns."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    if not text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text)
        if durable:
            f.flush()
            os.fsync(f.fileno())
