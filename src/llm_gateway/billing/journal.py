"""The money journal: charges owed that the database could not take yet.

One JSON line per settlement, in files of a local folder. A file is written
whole under a temporary name, flushed to disk and renamed, so a reader never
sees half of one. A starting gateway claims every file (renames it to
``*.replaying-<pid>``, so that two processes never replay the same file),
replays it through the normal settlement path and deletes it once the
database has taken every charge in it. A claimed file whose process died is
claimed again; its charges are then marked as maybe done, so that a replay
never charges twice (each charge carries its ledger entry id).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("llm_gateway.billing")

_SUFFIX = ".jsonl"
_CLAIMED = ".replaying-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Journal:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.claimed: list[Path] = []

    def write(self, records: list[dict[str, Any]]) -> Path | None:
        if not records:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"money-{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        tmp = self.folder / (name + ".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
            out.flush()
            os.fsync(out.fileno())
        final = self.folder / (name + _SUFFIX)
        tmp.rename(final)
        return final

    def claim(self) -> list[dict[str, Any]]:
        """The records of every unclaimed file (and of files claimed by a
        process that died), now claimed by this process."""
        if not self.folder.is_dir():
            return []
        records: list[dict[str, Any]] = []
        for path in sorted(self.folder.iterdir()):
            stale = False
            if _CLAIMED in path.name:
                head, _, pid = path.name.rpartition(_CLAIMED)
                if not pid.isdigit() or _alive(int(pid)):
                    continue
                stale = True
                base = head
            elif path.name.endswith(_SUFFIX):
                base = path.name
            else:
                continue
            mine = self.folder / f"{base}{_CLAIMED}{os.getpid()}"
            try:
                path.rename(mine)
            except OSError:
                continue  # another process claimed it first
            try:
                lines = mine.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                log.error("money journal %s unreadable (%s)", mine, exc)
                continue
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    log.error("money journal %s: a line is not JSON; skipped", mine)
                    continue
                if stale:
                    record["retry"] = True
                records.append(record)
            self.claimed.append(mine)
        return records

    def release_claimed(self) -> None:
        """Delete the claimed files: every charge in them reached the database
        (or was journalled again)."""
        for path in self.claimed:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self.claimed.clear()
