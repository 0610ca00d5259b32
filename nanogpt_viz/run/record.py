"""A run is a record: the directory every run writes, and outlives the process that trained.

    run.json       the manifest (RunManifest): the corpus it was trained on (path, format, split, token
                   count and a content fingerprint), the plan, model and train settings, the world size,
                   where it was continued from, its status and end reason; replaced atomically
    metrics.jsonl  one JSON object per optimizer step, append-only, flushed per line (a window tails it)
    status.json    the latest progress / end state, replaced atomically
    history/       every step's per-token losses, one set of files per rank (history.py)
    ckpt.pt        nanoGPT-compatible checkpoint

Pure: numpy only (the `plan` subcommand imports this without torch).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from nanogpt_viz.atomic import atomic_write_text

# the run directory's files
CKPT_FILE = "ckpt.pt"
METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "status.json"
RUN_FILE = "run.json"
HISTORY_DIR = "history"
STOP_REQUEST = "stop-request"  # created in a run directory to stop its training processes
RUNS_ROOT = "runs"  # where a run without --out goes: runs/<timestamp>-<corpus>
DEFAULT_HISTORY_BUDGET = 2 << 30  # bytes of per-token rows kept before the history thins (history.py)


class RunError(ValueError):
    """A run directory that cannot be used as asked; the message is one user-facing sentence."""


class EndReason(str, Enum):
    """How a run ended. A str: `reason == "finished"`, dict keys and JSON keep working."""

    FINISHED = "finished"
    STOPPED = "stopped"
    NONFINITE = "nonfinite"
    OOM = "oom"
    ERROR = "error"

    __hash__ = str.__hash__  # hashes as its value, so {"oom": ...}.get(EndReason.OOM) finds it
    __format__ = str.__format__  # f"{reason}" is "oom" (Python 3.11 would print "EndReason.OOM")

    def __str__(self) -> str:
        return self.value

    @property
    def ok(self) -> bool:
        """The run ended as asked (finished, or stopped by the user)."""
        return self in (EndReason.FINISHED, EndReason.STOPPED)


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def metric_record(rep: Any, init_eval: Any = None) -> dict[str, Any]:
    """The metrics.jsonl / `train --json` line of one StepReport (and of the evaluation before step 0, which rides
    on the first step's line): one format for the CLI and the window."""
    rec = {"step": rep.step, "epoch": rep.epoch, "loss": rep.loss, "lr": rep.lr, "tokens_per_s": rep.tokens_per_s,
           "grad_norm": rep.grad_norm, "mfu": rep.mfu, "mfu_datasheet": rep.mfu_datasheet, "val_loss": rep.val_loss,
           "dt": rep.dt, "tokens_seen": rep.tokens_seen, "world_size": rep.world_size}
    if getattr(rep, "peak_flops", None):  # which ceilings mfu and mfu_datasheet are fractions of
        rec.update(mfu_peak_tflops=rep.peak_flops / 1e12, mfu_datasheet_peak_tflops=rep.datasheet_peak_flops / 1e12)
    rec.update(rep.lens_record())  # bpb, val_bpb, rows_across_docs, targets_after_eot, ...
    if rep.val_loss is not None:  # after step+1 steps, measured under val_protocol
        rec.update(val_protocol=rep.val_protocol, val_tokens=rep.val_tokens)
        if rep.train_loss_est is not None:
            rec["train_loss_est"] = rep.train_loss_est
    if init_eval is not None:  # the evaluation before step 0 (nanoGPT's "step 0" line)
        rec.update(init_val_loss=init_eval.val_loss, init_val_protocol=init_eval.val_protocol,
                   init_val_tokens=init_eval.val_tokens)
        if init_eval.val_bpb is not None:
            rec["init_val_bpb"] = init_eval.val_bpb
        if init_eval.train_loss_est is not None:
            rec["init_train_loss_est"] = init_eval.train_loss_est
    return rec


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


# ------------------------------------------------------------------------------------------------
# The corpus a run belongs to

_MIB = 1 << 20
_PAGES = 32  # strided 4 KiB samples between the first, middle and last MiB of a large file


def _hash_part(h: Any, part: np.ndarray) -> None:
    """A file's (or shard's) length, dtype and sampled content: all of it up to 3 MiB, else its first,
    middle and last MiB plus 32 strided 4 KiB pages (a few ms for a 20 GB file, from the page cache)."""
    n, item = len(part), part.dtype.itemsize
    h.update(f"{n}:{part.dtype.str};".encode())
    if n * item <= 3 * _MIB:
        h.update(np.ascontiguousarray(part[:n]).tobytes())
        return
    m, page = _MIB // item, 4096 // item
    spans = [(0, m), ((n - m) // 2, (n - m) // 2 + m), (n - m, n)]
    spans += [(a, a + page) for a in np.linspace(m, n - m - page, _PAGES).astype(np.int64).tolist()]
    for a, b in spans:
        h.update(np.ascontiguousarray(part[a:b]).tobytes())


def fingerprint_tokens(tokens: Any) -> str:
    """blake2b over a token split's files (a TokenArray's parts, or one array), sampled: stable across
    reopening, different when a file's length or sampled content differs."""
    h = hashlib.blake2b(digest_size=16)
    parts = getattr(tokens, "parts", None)
    for part in (parts if parts is not None else (np.asarray(tokens),)):
        _hash_part(h, part)
    return h.hexdigest()


@dataclass(frozen=True)
class CorpusIdentity:
    path: str  # as opened (absolute)
    format: str  # TokenCorpus.fmt: text, nanogpt-bin, nanogpt-dir, llmc, llmc-dir, npy, npy-dir
    split: str  # the split trained on
    tokens: int  # tokens in that split
    fingerprint: str  # fingerprint_tokens(split)
    val_fraction: float = 0.1  # where the corpus has no val file: how its val split was cut
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CorpusIdentity":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def corpus_identity(corpus: Any, split: str = "train", val_fraction: float = 0.1) -> CorpusIdentity:
    """The identity of `corpus.split(split)` (a TokenCorpus): what `check_corpus` compares later."""
    tokens = corpus.split(split)
    return CorpusIdentity(path=str(Path(corpus.path).absolute()), format=str(corpus.fmt), split=split,
                          tokens=len(tokens), fingerprint=fingerprint_tokens(tokens),
                          val_fraction=float(val_fraction), name=str(getattr(corpus, "name", "")))


def check_corpus(identity: CorpusIdentity, corpus: Any) -> str | None:
    """None when `corpus` (a TokenCorpus, or None when it could not be opened) holds the tokens this run
    was trained on; else one sentence saying what differs."""
    where = identity.path
    if corpus is None:
        return (f"The corpus this run was trained on ({where}) is missing; open the file it was trained on "
                f"({identity.tokens:,} {identity.split} tokens).")
    if not corpus.has_split(identity.split):
        return (f"{corpus.path} has no {identity.split} split, and this run was trained on the "
                f"{identity.split} split of {where}.")
    tokens = corpus.split(identity.split)
    if len(tokens) != identity.tokens:
        return (f"{corpus.path} has {len(tokens):,} {identity.split} tokens, but this run was trained on "
                f"{identity.tokens:,} ({where}); it is different data.")
    if fingerprint_tokens(tokens) != identity.fingerprint:
        return (f"{corpus.path} has as many {identity.split} tokens as the corpus this run was trained on "
                f"({where}) but different content; the per-token losses would be drawn on the wrong text.")
    return None


# ------------------------------------------------------------------------------------------------
# run.json


@dataclass
class RunManifest:
    run_id: str
    created: str  # ISO 8601, local time with offset
    corpus: CorpusIdentity
    plan: dict[str, Any]  # PlanConfig.to_dict()
    model: dict[str, Any]  # ModelConfig.to_dict()
    train: dict[str, Any]  # TrainConfig.to_dict()
    world_size: int
    status: str = "running"  # "running", then an EndReason value
    end_reason: str | None = None
    parent: dict[str, Any] | None = None  # {"checkpoint": path, "step": n}: continued from
    history: dict[str, Any] = field(default_factory=dict)  # budget_bytes, rows_per_step, N, thinned_from_step, ...
    notes: list[str] = field(default_factory=list)
    model_preset: str | None = None
    message: str | None = None  # the end's sentence
    ended: str | None = None  # ISO 8601
    steps_done: int | None = None  # at the end
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["corpus"] = self.corpus.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunManifest":
        names = {f.name for f in dataclasses.fields(cls)}
        body = {k: v for k, v in d.items() if k in names}
        body["corpus"] = CorpusIdentity.from_dict(d["corpus"])
        return cls(**body)

    def continued_note(self) -> str | None:
        if not self.parent:
            return None
        return f"continued from {self.parent.get('checkpoint')} at step {int(self.parent.get('step', 0)):,}"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def make_manifest(run_dir: str | os.PathLike, corpus: Any, split: str, plan: Any, model: Any, train: Any, *,
                  world_size: int, parent: dict[str, Any] | None = None,
                  history_budget: int = DEFAULT_HISTORY_BUDGET, val_fraction: float = 0.1,
                  model_preset: str | None = None, notes: list[str] | None = None) -> RunManifest:
    """A new run's manifest (status "running"); plan/model/train are the config records or their dicts."""
    as_dict = (lambda c: c if isinstance(c, dict) else c.to_dict())
    pd = as_dict(plan)
    return RunManifest(
        run_id=Path(run_dir).name, created=now_iso(), corpus=corpus_identity(corpus, split, val_fraction),
        plan=pd, model=as_dict(model), train=as_dict(train), world_size=int(world_size), parent=parent,
        history={"budget_bytes": int(history_budget), "dtype": "float16", "N": pd.get("block_size"),
                 "rows_per_step": int(pd.get("grad_accum", 1)) * int(pd.get("world_size", 1))
                 * int(pd.get("batch_size", 0)), "thinned_from_step": None},
        notes=list(notes or []), model_preset=model_preset)


def write_manifest(run_dir: str | os.PathLike, m: RunManifest) -> Path:
    path = Path(run_dir) / RUN_FILE
    atomic_write_text(path, json.dumps(m.to_dict(), indent=1) + "\n")
    return path


def read_manifest(run_dir: str | os.PathLike) -> RunManifest:
    path = Path(run_dir) / RUN_FILE
    if Path(run_dir).is_file() and Path(run_dir).name == RUN_FILE:
        path = Path(run_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(f"{Path(run_dir)} is not a run directory (it has no {RUN_FILE})") from None
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return RunManifest.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunError(f"{path} is damaged ({type(exc).__name__}: {exc}); the run's settings cannot be "
                       f"read from it") from None


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def update_manifest(run_dir: str | os.PathLike, **fields: Any) -> RunManifest | None:
    """Set fields of an existing run.json (None when there is none or it cannot be read)."""
    try:
        m = read_manifest(run_dir)
    except RunError:
        return None
    for k, v in fields.items():
        setattr(m, k, v)
    write_manifest(run_dir, m)
    return m


# ------------------------------------------------------------------------------------------------
# Run directories: a fresh one per run, never one reused silently


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.")
    return s[:60] or "run"


def new_run_dir(root: str | os.PathLike = RUNS_ROOT, name: str = "run") -> Path:
    """Create and return root/<YYYYmmdd-HHMMSS>-<name>, never an existing directory (-2, -3, ... on a clash)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(name)}"
    for k in range(1, 10_000):
        path = root / (base if k == 1 else f"{base}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError(f"cannot find a free run directory name under {root}")


_RUN_FILES = (RUN_FILE, METRICS_FILE, STATUS_FILE, CKPT_FILE, STOP_REQUEST)


def run_contents(path: str | os.PathLike) -> list[str]:
    """What in `path` makes it a run worth keeping: run.json, a non-empty metrics.jsonl, ckpt.pt."""
    p = Path(path)
    found = []
    if (p / RUN_FILE).exists():
        found.append(RUN_FILE)
    try:
        n = sum(1 for ln in (p / METRICS_FILE).read_bytes().splitlines() if ln.strip())
        if n:
            found.append(f"{n:,} step{'s' if n != 1 else ''} in {METRICS_FILE}")
    except OSError:
        pass
    if (p / CKPT_FILE).exists():
        found.append(CKPT_FILE)
    return found


def prepare_run_dir(path: str | os.PathLike, *, resume: bool, overwrite: bool, clear: bool = True) -> None:
    """Refuse to start a run in a directory that holds one (run.json, metrics.jsonl with steps, ckpt.pt)
    unless `resume` (continue it) or `overwrite` (replace it: its run files are removed first, when
    `clear`; a torchrun rank other than 0 passes clear=False). Creates the directory."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunError(f"{p} is a file, not a run directory; give --out a directory")
    found = run_contents(p) if p.is_dir() else []
    if found and not resume and not overwrite:
        raise RunError(f"{p} already holds a run ({', '.join(found)}); give --resume to continue it, "
                       f"--overwrite to replace it, or another --out")
    if overwrite and not resume and clear and p.is_dir():
        for name in _RUN_FILES:
            try:
                (p / name).unlink()
            except FileNotFoundError:
                pass
        shutil.rmtree(p / HISTORY_DIR, ignore_errors=True)
    p.mkdir(parents=True, exist_ok=True)


def parse_bytes(text: str) -> int:
    """'2G', '512M', '64k', '1000' -> bytes (binary multiples); ValueError on anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not a size (a number of bytes, optionally with K, M, G or T)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"
