"""The episode log: every episode the Learner commits, on disk before it is acknowledged.

A checkpoint holds the replay buffer as it was at the checkpoint; the log holds what came
after, so a restarted Learner loses no transitions: it loads the newest sealed checkpoint
and re-adds the logged episodes in commit order. Each entry is one file, written
atomically and named by the replay buffer's running count before the episode was added
(its sequence number), so entries replay in order, a gap is detectable, and a checkpoint
makes every entry below its count obsolete. Entries are NumPy archives (no pickle).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import numpy as np

from sarl_dist.core.replay import Batch
from sarl_dist.runtime.checkpoint import CheckpointError, write_atomic

_NAME = re.compile(r"^(\d{12})\.npz$")


class EpisodeLog:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _entries(self) -> list[tuple[int, Path]]:
        found = ((_NAME.match(p.name), p) for p in self.directory.iterdir())
        return sorted((int(m[1]), p) for m, p in found if m)

    def append(self, seq: int, episode: int, batch: Batch) -> None:
        buf = io.BytesIO()
        columns = {f.name: getattr(batch, f.name) for f in fields(Batch)}
        np.savez(buf, episode=np.int64(episode), **columns)
        write_atomic(self.directory / f"{seq:012d}.npz", buf.getvalue())

    def read(self, start: int) -> Iterator[tuple[int, int, Batch]]:
        """(sequence number, episode id, transitions) of every entry from `start` on, in order."""
        for seq, path in self._entries():
            if seq < start:
                continue
            try:
                with np.load(path, allow_pickle=False) as data:
                    episode = int(data["episode"])
                    batch = Batch(**{f.name: data[f.name] for f in fields(Batch)})
            except Exception as exc:
                raise CheckpointError(f"episode log entry {path} is unreadable: {exc}") from None
            yield seq, episode, batch

    def discard_from(self, seq: int) -> int:
        """Drop entries at or after `seq` (a resumed driver re-runs those episodes)."""
        return self._remove(lambda s: s >= seq)

    def trim_before(self, seq: int) -> int:
        """Drop entries a sealed checkpoint already holds."""
        return self._remove(lambda s: s < seq)

    def _remove(self, doomed) -> int:
        removed = 0
        for seq, path in self._entries():
            if doomed(seq):
                path.unlink(missing_ok=True)
                removed += 1
        return removed
