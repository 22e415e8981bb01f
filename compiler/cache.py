"""The on-disk kernel cache: one JSON file per compile key, written atomically, checked on load.

The directory is $LOWBIT_CACHE_DIR, else ~/.cache/lowbit. A corrupted or truncated entry is detected
(by its content hash) and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional


def cache_dir() -> Path:
    return Path(os.environ.get("LOWBIT_CACHE_DIR") or Path.home() / ".cache" / "lowbit")


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load(key: str) -> Optional[dict]:
    """The cached payload of `key`, or None when absent or corrupted."""
    path = cache_dir() / f"{key}.json"
    try:
        entry = json.loads(path.read_text())
        if entry.get("sha256") == _digest(entry["payload"]):
            return entry["payload"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def store(key: str, payload: dict) -> None:
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{key}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"sha256": _digest(payload), "payload": payload}, f)
    os.replace(tmp, directory / f"{key}.json")


def get_or_build(key: str, build: Callable[[], dict]) -> dict:
    payload = load(key)
    if payload is None:
        payload = build()
        store(key, payload)
    return payload
