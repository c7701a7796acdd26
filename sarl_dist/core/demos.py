"""Language-annotated demonstrations as replay transitions (offline-to-online).

SARL seeds its real-robot runs with 3 demonstrations per task. A demonstration here is
one `.npz` file holding the states at each decision and the prompt that was followed
between them (docs/robot.md):

    images   (T+1, H, W, 3) uint8   the Q camera at each decision and after the last one
    proprio  (T+1, D)       float   the robot's state at the same times (cut/padded to 8)
    prompts  (T,)           str     the instruction followed from state t to state t+1
    success  ()             bool    whether it ended in success (default: true)

A demo's next-candidate sets (what the expected-SARSA target averages over) are its own
prompts and reset-to-home: the set an operator chose from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarl_dist.config import ConfigError
from sarl_dist.core.prompt_cache import RESET_ID
from sarl_dist.core.replay import Batch
from sarl_dist.observation import IMAGE_SIZE, proprio, resize

DEMO_EPISODE = -1_000_000  # demonstration k is committed as episode DEMO_EPISODE - k


class DemoError(ConfigError):
    """A demonstration the run cannot use (train.demos), found before anything starts."""


@dataclass(frozen=True)
class Demo:
    path: Path
    images: np.ndarray
    proprio: np.ndarray
    prompts: tuple[str, ...]
    success: bool

    def batch(self, prompt_ids: dict[str, int], num_prompts: int) -> Batch:
        images = np.stack([resize(im, IMAGE_SIZE) for im in self.images])
        states = np.stack([proprio(s) for s in self.proprio])
        ids = np.asarray([prompt_ids[p] for p in self.prompts], np.int64)
        n = len(ids)
        reward = np.zeros(n, np.float32)
        done = np.zeros(n, np.float32)
        reward[-1] = done[-1] = float(self.success)
        mask = np.zeros((n, num_prompts), bool)
        mask[:, ids] = True
        mask[:, RESET_ID] = True
        return Batch(images[:-1], states[:-1], ids, reward, done, images[1:], states[1:], mask)


def save_demo(
    path: str | Path,
    images: np.ndarray,
    proprio: np.ndarray,
    prompts: list[str],
    success: bool = True,
) -> Path:
    """Write one demonstration in the format above (for converters and tests)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        images=np.asarray(images, np.uint8),
        proprio=np.asarray(proprio, np.float32),
        prompts=np.asarray(prompts, dtype=str),
        success=np.asarray(success),
    )
    return path


def read_demo(path: Path) -> Demo:
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise DemoError(f"demo {path}: not a readable .npz ({exc})") from None
    missing = {"images", "proprio", "prompts"} - set(fields)
    if missing:
        raise DemoError(f"demo {path}: missing {sorted(missing)}")
    images, states, prompts = fields["images"], fields["proprio"], fields["prompts"]
    steps = len(prompts)
    if steps == 0 or images.shape[0] != steps + 1 or states.shape[0] != steps + 1:
        raise DemoError(
            f"demo {path}: {steps} prompts need {steps + 1} images and states, got "
            f"{images.shape[0]} and {states.shape[0]}"
        )
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DemoError(f"demo {path}: images must be (T+1, H, W, 3) uint8, got {images.shape}")
    texts = tuple(str(p).strip() for p in prompts)
    if not all(texts):
        raise DemoError(f"demo {path}: an empty prompt")
    return Demo(path, images, states, texts, bool(fields.get("success", True)))


def load_demos(location: str | Path) -> list[Demo]:
    """A .npz file or every .npz in a directory (sorted, so ids are stable)."""
    path = Path(location)
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise DemoError(f"train.demos: no .npz demonstrations at {path}")
    return [read_demo(f) for f in files]
