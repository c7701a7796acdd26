"""The episode log: every episode the Learner commits, on disk before it is acknowledged.

A checkpoint holds the replay buffer as it was at the checkpoint; the log holds what came
after, so a restarted Learner loses no transitions: it loads the newest sealed checkpoint
and re-adds the logged episodes in commit order. Each entry is one file holding a group of
episodes committed together (one write and one fsync for the group), written atomically
and named by the replay buffer's running count before its first episode was added (its
sequence number), so entries replay in order, a gap is detectable, and a checkpoint makes
every entry below its count obsolete (a group never straddles one: the Learner saves and
commits under one lock). Entries are NumPy archives (no pickle).
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

    def append(self, seq: int, episodes: list[tuple[int, Batch]]) -> None:
        """One entry for a group of (episode id, transitions), whole or not at all."""
        buf = io.BytesIO()
        group = Batch.concat([batch for _, batch in episodes])
        columns = {f.name: getattr(group, f.name) for f in fields(Batch)}
        ids = np.asarray([episode for episode, _ in episodes], np.int64)
        lengths = np.asarray([len(batch) for _, batch in episodes], np.int64)
        np.savez(buf, episode=ids, lengths=lengths, **columns)
        write_atomic(self.directory / f"{seq:012d}.npz", buf.getvalue())

    def read(self, start: int) -> Iterator[tuple[int, int, Batch]]:
        """(sequence number, episode id, transitions) of every episode from `start` on, in
        order. An entry of one episode, as written before groups, has no `lengths`."""
        for first, path in self._entries():
            try:
                with np.load(path, allow_pickle=False) as data:
                    ids = np.atleast_1d(data["episode"])
                    lengths = data["lengths"] if "lengths" in data.files else [len(data["prompt"])]
                    columns = {f.name: data[f.name] for f in fields(Batch)}
            except Exception as exc:
                raise CheckpointError(f"episode log entry {path} is unreadable: {exc}") from None
            seq = first
            for episode, n in zip(ids, lengths, strict=True):
                if seq >= start:
                    part = {k: v[seq - first : seq - first + n] for k, v in columns.items()}
                    yield seq, int(episode), Batch(**part)
                seq += int(n)

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
