"""Checkpoint files that are whole or refused: atomic writes and a SHA-256 manifest.

A checkpoint directory holds files written by several actors plus `manifest.json`,
written last; a directory without a manifest, or whose files do not match it, is
never loaded, so a crash mid-save leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    pass


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (a crash or a full disk leaves the old
    file, and no temporary one)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal(directory: Path, meta: dict) -> None:
    """Record every file's digest; from now on the checkpoint counts."""
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.name != MANIFEST}
    write_atomic(
        directory / MANIFEST, json.dumps({"meta": meta, "files": files}, indent=1).encode()
    )


def verify(directory: Path) -> dict:
    """The checkpoint's meta if every file is present and intact; CheckpointError otherwise."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{directory} has no {MANIFEST}: an unfinished checkpoint")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{manifest_path} is not valid JSON: {exc}") from None
    for name, digest in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing")
        if sha256_file(path) != digest:
            raise CheckpointError(f"checkpoint file {path} does not match its checksum")
    return manifest["meta"]


def episodes_of(directory: Path) -> int:
    """The episode count a checkpoint directory is named by (ep-0000012 -> 12)."""
    return int(directory.name.split("-")[-1])


def latest(root: Path) -> Path | None:
    """The newest sealed checkpoint under root (named by episode count), if any."""
    if not root.is_dir():
        return None
    sealed = [p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file()]
    return max(sealed, key=episodes_of, default=None)


def prune(root: Path, keep: int) -> None:
    sealed = sorted((p for p in root.iterdir() if p.is_dir()), key=episodes_of)
    for old in sealed[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
