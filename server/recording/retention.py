"""Deleting recordings older than ``keep_days`` (their day folder's date, or the file's time)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

log = logging.getLogger("sandra.recording")


def sweep(root: Path, keep_days: float, now: dt.datetime) -> list[Path]:
    """Delete ``<root>/<YYYY-MM-DD>/<session>.{ogg,json}`` older than ``keep_days``; returns
    what was deleted. Empty day folders go too. ``now`` is an aware UTC datetime."""
    if not root.is_dir():
        return []
    cutoff = now.timestamp() - keep_days * 86400
    deleted = []
    for day in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in day.iterdir():
            if path.suffix not in (".ogg", ".json") or not path.is_file():
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    deleted.append(path)
            except OSError as exc:
                log.warning("retention: cannot delete %s: %s", path, exc)
        try:
            if not any(day.iterdir()):
                day.rmdir()
        except OSError:
            pass
    if deleted:
        log.info("retention: deleted %d recording files older than %s days", len(deleted), keep_days)
    return deleted
