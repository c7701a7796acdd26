"""Live progress for a run: a rich bar on a terminal, periodic plain lines elsewhere
(ray job logs, CI), so a long run always says how far it is and how it is doing."""

from __future__ import annotations

import time
from collections import deque

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(
        self, total: int, enabled: bool = True, window: int = 20, plain: bool = False
    ) -> None:
        """`plain`: a line per episode and no bar (a person is answering in this terminal)."""
        self.total, self.enabled = total, enabled
        self.console = Console(stderr=True)
        self.recent: deque[bool] = deque(maxlen=window)
        self.done = 0
        self._t0 = time.perf_counter()
        self._updates0: int | None = None  # counted from the first episode this process sees
        self._every = 1 if plain else max(1, total // 20)
        self._bar: RichProgress | None = None
        if enabled and self.console.is_terminal and not plain:
            self._bar = RichProgress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"),
                console=self.console,
            )
            self._task = self._bar.add_task("train", total=total, stats="")
            self._bar.start()

    def resume(self, done: int) -> None:
        self.done = done
        self._print(f"resumed at episode {done}/{self.total}")

    def episode(self, summary: dict, learner: dict, vlm: dict) -> None:
        self.done += 1
        self.recent.append(bool(summary["success"]))
        if self._updates0 is None:
            self._updates0, self._t0 = learner["updates"], time.perf_counter()
        rate = (learner["updates"] - self._updates0) / max(1e-9, time.perf_counter() - self._t0)
        stats = (
            f"success(last {len(self.recent)}) {sum(self.recent) / len(self.recent):.2f}  "
            f"updates {learner['updates']} ({rate:.1f}/s)  "
            f"policy v{learner['version']}  replay {learner['replay_size']}  "
            f"vlm calls {vlm['calls']} hits {vlm['cache_hits']} merged {vlm['merged']} "
            f"fallbacks {vlm['fallbacks']}"
        )
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, stats=stats)
        elif self.enabled and (self.done % self._every == 0 or self.done == self.total):
            # named by its id, as the prompts name it (0-based); then how many are done
            self._print(f"episode {summary['episode']} done ({self.done}/{self.total})  {stats}")

    def evaluation(self, record: dict) -> None:
        self._print(
            f"eval @ {record['episodes_seen']} episodes: success {record['success_rate']:.3f} "
            f"± {record['stderr']:.3f} over {record['episodes']} evaluation episodes"
        )

    def _print(self, line: str) -> None:
        if self.enabled:
            self.console.print(line, highlight=False, soft_wrap=True)  # a log keeps lines whole

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
