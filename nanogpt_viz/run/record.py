"""A run directory that outlives the process that trains: metrics.jsonl, status.json, ckpt.pt.

`metrics.jsonl` is append-only (one JSON object per optimizer step, flushed per line), so a window
can tail it while torchrun trains; `status.json` is replaced atomically, so a reader never sees half.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

# the run directory's files
CKPT_FILE = "ckpt.pt"
METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "status.json"
STOP_REQUEST = "stop-request"  # created in a run directory to stop its training processes


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class RunLog:
    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / METRICS_FILE
        self.status_path = self.dir / STATUS_FILE
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")

    def metric(self, record: dict[str, Any]) -> None:
        self._metrics.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")
        self._metrics.flush()

    def status(self, state: str, **fields: Any) -> None:
        body = {"state": state, "pid": os.getpid(), "time": time.time(),
                **{k: _plain(v) for k, v in fields.items()}}
        atomic_write_text(self.status_path, json.dumps(body, indent=1) + "\n")

    def close(self) -> None:
        self._metrics.close()


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def read_metrics(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete lines of a metrics.jsonl from byte `offset`; returns (records, new offset).

    A line still being written (no newline yet) is left for the next call.
    """
    p = Path(path)
    if not p.exists():
        return [], offset
    with open(p, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    out = []
    for line in data[: end + 1].splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out, offset + end + 1


def read_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
