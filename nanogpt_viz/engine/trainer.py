"""The headless GPT-2 training engine: a generator of immutable reports.

The trainer takes every batch from `BatchPlan`, so the rows the view highlights are exactly the rows
the model trains on. It knows nothing about the GUI: `Trainer.run()` yields a `RunInfo`, then one
`StepReport` per optimizer step, then a final `RunEnd`. The CLI prints them, the GUI's worker turns
them into signals, a test just iterates.

Hot-loop rules (GPU): the per-token losses, the mean loss and the grad norm of step k are copied into
pinned host buffers with non-blocking copies and a CUDA event is recorded; the report of step k is
built only after step k+1 has been queued, so reading it never stalls the device. A non-finite step is
skipped on the device (the fused AdamW kernel's `found_inf` input), so the weights from before it are
kept without a host sync. The one wait per step is on step k's event while step k+1 runs: on an H200
(GPT-2 124M, B=64, N=1024) the host still waits >= 36 ms there on every step, i.e. the GPU always has a
whole step queued (benchmarks/profile_gpu.py's host timing, results/h200_profile_default_2.log).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
from collections import deque
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from nanogpt_viz.engine.kernels import fused_loss
from nanogpt_viz.data.batching import BatchPlan, gather_rows, plan_for
from nanogpt_viz.data import tokenizer as _tok
from nanogpt_viz.data.documents import masked_split, token_byte_lengths
from nanogpt_viz.config import ModelConfig, PlanConfig, TrainConfig
from nanogpt_viz.run.record import DEFAULT_HISTORY_BUDGET, EndReason
from nanogpt_viz.data.evaluation import (WHOLE_MAX_TARGETS, WHOLE_MAX_TARGETS_CPU, EvalPlan, EvalResult, eval_plan,
                                    resolve_protocol)

# MFU: one formula and one table of ceilings, in model.py (re-exported here)
from nanogpt_viz.engine.model import (DATASHEET_PEAK_FLOPS, PEAK_FLOPS, estimate_mfu,  # noqa: E402
                                      flops_per_token, peak_flops_for)


HISTORY_MAX = 100_000  # loss-history entries kept for checkpoints


class TrainError(RuntimeError):
    """A run that cannot start; the message is a user-facing sentence."""


class _SaveFailed(Exception):
    """save_checkpoint could not write the file (the previous one, if any, is intact)."""

    def __init__(self, cause: BaseException, directory: str, needed: int):
        super().__init__(str(cause))
        self.cause, self.directory, self.needed = cause, directory, needed


# ----------------------------------------------------------------------------------------------
# What crosses from the engine to its consumer: plain values and numpy arrays, never tensors.


@dataclass(frozen=True)
class RunInfo:
    device: str  # "cuda", "mps", "cpu"
    device_name: str
    dtype: str
    compiled: bool
    n_params: int
    start_step: int
    total_steps: int
    tokens_per_step: int
    world_size: int
    out_dir: str | None
    notes: tuple[str, ...] = ()
    residual_dtype: str = "float32"  # the residual stream between blocks (TrainConfig.residual_dtype)
    history: tuple[tuple[int, float, float], ...] = ()  # (step, train, val) restored on resume


@dataclass(frozen=True)
class StepReport:
    step: int
    epoch: int
    lr: float
    loss: float  # mean over every prediction of the step (all micro-batches, all ranks)
    grad_norm: float
    tokens_per_s: float  # all ranks together
    mfu: float | None  # fraction of the device's measured bf16 ceiling (peak_flops), None when unknown (CPU)
    dt: float  # seconds for this step
    starts: np.ndarray  # (K, W, B) the plan's row starts for this step
    per_token: np.ndarray | None  # (K, len(ranks), B, N) float32 losses of the rows trained here
    position_loss: np.ndarray | None  # (N,) mean loss at each position in the block
    ranks: tuple[int, ...]
    val_loss: float | None = None
    tokens_seen: int = 0
    world_size: int = 1
    finished_at: float = 0.0  # time.perf_counter() when the report was made (in the trainer's thread)
    val_protocol: str | None = None  # how val_loss was measured (evaluation.py), when there is one
    val_tokens: int = 0  # distinct val targets that evaluation covered
    train_loss_est: float | None = None  # the nanogpt protocol's train-split estimate, beside val
    mfu_datasheet: float | None = None  # as mfu, against the datasheet's peak (DATASHEET_PEAK_FLOPS)
    peak_flops: float | None = None  # the ceilings mfu and mfu_datasheet are fractions of (FLOP/s)
    datasheet_peak_flops: float | None = None
    # Bits per byte (GPT-2-token corpora): the step's mean loss x its targets / the bytes those targets
    # stand for / ln 2, the bytes counted on this process's rows (every row in one process; under torchrun
    # the all-ranks mean loss over rank 0's bytes, see the README). val_bpb: the val loss's own targets.
    bpb: float | None = None
    val_bpb: float | None = None
    # Document boundaries (<|endoftext|>) in this process's rows of the step: rows whose inputs hold an EOT
    # (they read across a boundary) and targets whose input is an EOT (the first token of a new document)
    rows_across_docs: int | None = None
    targets_after_eot: int | None = None
    # per-token losses split by boundary (with per_token): the mean loss of targets after an EOT and of the
    # rest, and by position in the block (N,) (NaN where no such target), with the after-EOT count (N,)
    loss_after_eot: float | None = None
    loss_rest: float | None = None
    position_loss_after_eot: np.ndarray | None = None
    position_loss_rest: np.ndarray | None = None
    position_count_after_eot: np.ndarray | None = None

    def lens_record(self) -> dict[str, Any]:
        """The bpb / document fields of a metrics.jsonl or `train --json` line (only those that are known)."""
        out: dict[str, Any] = {}
        for key in ("bpb", "val_bpb", "rows_across_docs", "targets_after_eot", "loss_after_eot", "loss_rest"):
            v = getattr(self, key)
            if v is not None:
                out[key] = v
        return out


@dataclass(frozen=True)
class EvalReport:
    """The evaluation before the first step (iteration 0, as nanoGPT, build-nanogpt and llm.c do)."""

    steps_done: int
    val_loss: float
    val_protocol: str
    val_tokens: int
    train_loss_est: float | None = None
    val_bpb: float | None = None


@dataclass(frozen=True)
class ModelSnapshot:
    """The weights at a step boundary, copied to the CPU (safe to use from another thread)."""

    step: int
    model_args: dict
    state: dict


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    path: str | None


@dataclass(frozen=True)
class RunEnd:
    """How a run ended. `reason` is an EndReason (a str Enum: comparing with "finished" still works);
    a plain string given here is converted."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", EndReason(self.reason))

    reason: EndReason  # finished, stopped, nonfinite, oom, error
    message: str
    step: int  # steps completed (nanoGPT's iter_num)
    checkpoint: str | None = None
    best_val_loss: float | None = None
    # the checkpoint could not be written (the run has then failed: reason "error"): where it was to go and
    # about how many bytes it needs, so that a window can offer to save it elsewhere
    save_failed: bool = False
    save_dir: str | None = None
    save_needed_bytes: int = 0


class TrainControl:
    """Thread-safe stop/pause flags, set from any thread (the GUI thread, a signal handler)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._lock = threading.Lock()
        self._requests: set[str] = set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused loop so it can see the stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self) -> None:
        while not self._running.wait(0.1):
            if self._requests:
                return

    def request(self, what: str) -> None:
        """Ask for "snapshot" (a CPU copy of the weights) or "checkpoint", served between steps."""
        with self._lock:
            self._requests.add(what)

    @property
    def has_requests(self) -> bool:
        return bool(self._requests)

    def take_requests(self) -> set[str]:
        with self._lock:
            out, self._requests = self._requests, set()
        return out


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun job (world_size 1: a plain single process)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> "DistInfo":
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ["WORLD_SIZE"]))

    @property
    def is_master(self) -> bool:
        return self.rank == 0


# ----------------------------------------------------------------------------------------------
# Device and precision


def detect_device(requested: str = "auto") -> tuple[str, str]:
    """(device type, human name): CUDA, then MPS, then CPU."""
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0)
    if requested == "cuda":
        raise TrainError("CUDA was requested but no CUDA GPU is available; choose device 'auto' or 'cpu'")
    mps = getattr(torch.backends, "mps", None)
    if requested in ("auto", "mps") and mps is not None and mps.is_available():
        return "mps", "Apple GPU (MPS)"
    if requested == "mps":
        raise TrainError("MPS was requested but is not available; choose device 'auto' or 'cpu'")
    import platform

    return "cpu", f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def resolve_dtype(device: str, requested: str = "auto") -> str:
    if requested != "auto":
        if device == "cpu" and requested == "float16":
            raise TrainError("float16 training is not supported on the CPU; use float32 or bfloat16")
        return requested
    if device == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "float32"


def lr_at(step: int, cfg: TrainConfig) -> float:
    """nanoGPT's schedule: linear warmup, cosine decay to min_lr, then flat."""
    decay_steps = cfg.lr_decay_steps or cfg.steps
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_steps + 1)
    if step >= decay_steps:
        return cfg.min_lr
    ratio = (step - cfg.warmup_steps) / max(1, decay_steps - cfg.warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


# ----------------------------------------------------------------------------------------------


def _split_by_eot(per_token: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    """Per-token losses (K, ranks, B, N) split by `after` (the target's input is <|endoftext|>): the two means,
    and by position in the block (documents.masked_split, as the window computes it)."""
    s = masked_split(per_token, after)
    return {"loss_after_eot": s["mean_after"], "loss_rest": s["mean_rest"],
            "position_loss_after_eot": s["after"].astype(np.float32),
            "position_loss_rest": s["rest"].astype(np.float32), "position_count_after_eot": s["count_after"]}


@dataclass
class _Pending:
    """A step whose numbers are still on their way off the device."""

    step: int
    lr: float
    slot: int
    t_end: float
    event: Any = None
    target_bytes: int = -1  # bytes of this process's targets (-1: not a GPT-2-token corpus)
    rows_across: int = 0
    targets_after_eot: int = 0


@dataclass
class Trainer:
    train_tokens: Any
    val_tokens: Any | None
    plan_config: PlanConfig
    model_config: ModelConfig
    train_config: TrainConfig
    out_dir: str | os.PathLike | None = None
    resume: bool = False
    control: TrainControl = field(default_factory=TrainControl)
    dist: DistInfo = field(default_factory=DistInfo)
    corpus_info: dict[str, Any] = field(default_factory=dict)
    model_preset: str | None = None
    # the run record (run/record.py): with out_dir, rank 0 writes this RunManifest to run.json once set up
    # (with the settings the run really uses) and again at the end; every rank writes its history/ files
    manifest: Any = None
    history_budget: int = DEFAULT_HISTORY_BUDGET  # bytes of per-token rows before the history thins
    # an object with eval_starts(iteration, split) -> (eval_iters, B) | None (nanogpt_replay.NanoGPTReplay):
    # the nanogpt protocol then evaluates the very batches the replayed nanoGPT run drew
    eval_replay: Any = None
    resume_checkpoint: Any = None  # with resume: the checkpoint.Checkpoint of OUT/ckpt.pt, when already read
    # with resume: TrainConfig fields the caller set on purpose (the CLI's --lr, --min-lr, ...); they win over
    # the checkpoint's recipe and the run says so in a note. Everything else comes from the checkpoint.
    train_overrides: dict[str, Any] | None = None

    # ---- set-up ---------------------------------------------------------------------------
    def _setup(self) -> None:
        from nanogpt_viz.engine import checkpoint as ckpt_mod
        from nanogpt_viz.engine.model import GPT

        tc, mc = self.train_config, self.model_config
        problems = tc.problems() + mc.problems()
        if problems:
            raise TrainError("; ".join(problems))
        self.start_step = self.steps_done = 0
        self.best_val_loss = math.inf
        self.notes: list[str] = []
        self._weights_bad = False  # an update made the weights non-finite: they must never be saved
        self._saved_step: int | None = None  # the step the checkpoint on disk holds (None: none of this run)
        if self.out_dir is not None and self.dist.is_master:
            removed = ckpt_mod.remove_stale_temps(self.out_dir)
            if removed:
                self.notes.append(f"removed {len(removed)} partial checkpoint file(s) left by an interrupted save "
                                  f"({sum(n for _, n in removed) / 1e6:.1f} MB) from {self.out_dir}")
        # (step, train loss, val loss) for the checkpoint; bounded, O(1) per step
        self.history: deque[tuple[int, float, float]] = deque(maxlen=HISTORY_MAX)
        resume_ckpt = None
        if self.resume:
            if self.out_dir is None:
                raise TrainError("resuming needs the run directory that holds ckpt.pt")
            path = Path(self.out_dir) / "ckpt.pt"
            if self.resume_checkpoint is not None:  # the caller has read OUT/ckpt.pt already
                resume_ckpt = self.resume_checkpoint
            elif not path.exists():
                raise TrainError(f"cannot resume: {path} does not exist")
            else:
                resume_ckpt = ckpt_mod.load_checkpoint(path)
            extra = resume_ckpt.extra or {}
            # Exact resume needs the same model, plan and recipe: take them from the checkpoint;
            # only the total number of steps comes from the caller.
            mc = self.model_config = ModelConfig.from_dict(resume_ckpt.model_args)
            if "plan" in extra:
                self.plan_config = PlanConfig.from_dict(extra["plan"])
            if "train" in extra:
                tc = self.train_config = self._resumed_recipe(TrainConfig.from_dict(extra["train"]), tc)
            self.start_step = self.steps_done = int(resume_ckpt.iter_num)
            self._saved_step = self.start_step
            self.best_val_loss = float(resume_ckpt.best_val_loss)
            hist = extra.get("history")
            if hist is not None:
                self.history.extend((int(a), float(b), float(c)) for a, b, c in hist.tolist())

        pc = self.plan_config
        if pc.block_size > mc.block_size:
            raise TrainError(f"the plan's block size N={pc.block_size} is larger than the model's context "
                             f"({mc.block_size}); lower N or raise the model's block_size")
        if self.dist.world_size > 1 and pc.world_size != self.dist.world_size:
            raise TrainError(f"the plan has W={pc.world_size} ranks but torchrun started "
                             f"{self.dist.world_size} processes; set --world-size to match")
        self.plan = plan_for(pc, self.train_tokens)
        self.eval_protocol = resolve_protocol(tc.eval_protocol, pc.sampling)
        self._eval_fixed: EvalPlan | None = None
        self.eval_on = (self.val_tokens is not None and len(self.val_tokens) > pc.block_size + 1
                        and tc.eval_interval > 0)
        if self.eval_on:
            parts = getattr(self.val_tokens, "parts", None)  # a TokenArray's shards, in file order
            self._val_shards = [len(p) for p in parts] if parts else [len(self.val_tokens)]

        self.device, self.device_name = detect_device(tc.device)
        if self.dist.world_size > 1 and self.device == "cuda":
            torch.cuda.set_device(self.dist.local_rank)
            self.device_name = torch.cuda.get_device_name(self.dist.local_rank)
        self.dev = torch.device(self.device, self.dist.local_rank) if self.device == "cuda" else torch.device(self.device)
        self.dtype = resolve_dtype(self.device, tc.dtype)
        if tc.residual_dtype == "bfloat16" and self.dtype != "bfloat16":
            raise TrainError(f"a bfloat16 residual stream needs bfloat16 training, and this run trains in "
                             f"{self.dtype} on {self.device}; use the float32 residual stream")
        if self.device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        torch.manual_seed(tc.seed + self.dist.rank)
        corpus_vocab = int(self.corpus_info.get("vocab_size", 0) or 0)
        if corpus_vocab > mc.vocab_size:
            raise TrainError(f"the corpus uses a vocabulary of {corpus_vocab:,} ids but the model has "
                             f"{mc.vocab_size:,}; raise the model's vocab_size")
        if self.eval_on:  # after the device is known: it bounds the whole-split evaluation
            self._eval_plan(self.start_step)  # an EvalError (a ValueError) stops the run here
        self.raw_model = GPT(mc, **self._engine_options()).to(self.dev)
        self.optimizer = self.raw_model.configure_optimizers(tc.weight_decay, tc.learning_rate,
                                                             (tc.beta1, tc.beta2), self.device)
        # fused AdamW skips a non-finite step on the device (found_inf); elsewhere the step reads a flag
        self._fused_adamw = bool(self.optimizer.defaults.get("fused"))
        if resume_ckpt is not None:
            self._load_weights(resume_ckpt)
            if resume_ckpt.optimizer_state:
                self._load_optimizer_state(resume_ckpt.optimizer_state)
            rng = (resume_ckpt.extra or {}).get("torch_rng")
            if rng is not None:
                torch.set_rng_state(rng)
            cuda_rng = (resume_ckpt.extra or {}).get("cuda_rng")
            if cuda_rng is not None and self.device == "cuda":
                torch.cuda.set_rng_state(cuda_rng)
        self.model = self.raw_model
        self._graph_steps = False
        self.compiled = bool(tc.compile if tc.compile is not None else self.device == "cuda")
        if self.compiled:
            mode = tc.compile_mode
            self.model = torch.compile(self.raw_model, mode=mode)
            # CUDA graphs replay into the same output buffers: say where an iteration begins
            self._graph_steps = mode is not None and "reduce-overhead" in mode
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.dist.local_rank] if self.device == "cuda" else None
            # gradients live in the all-reduce buckets (no copy in and out of them)
            self.model = DDP(self.model, device_ids=ids, gradient_as_bucket_view=True)
        pt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[self.dtype]
        self.autocast = (torch.autocast(device_type=self.device, dtype=pt) if pt != torch.float32
                         else contextlib.nullcontext())
        self.scaler = torch.amp.GradScaler(self.device) if self.dtype == "float16" else None
        # ranks this process computes: all of them in a single process (the gradient of W ranks'
        # micro-batches averaged is what DDP computes), only its own under torchrun
        self.local_ranks = (tuple(range(pc.world_size)) if self.dist.world_size == 1 else (self.dist.rank,))
        self.n_micro = pc.grad_accum * len(self.local_ranks)
        self.peak_flops = peak_flops_for(self.device, self.device_name)
        self.datasheet_peak_flops = peak_flops_for(self.device, self.device_name, datasheet=True)
        self.flops_per_token = flops_per_token(mc, self.raw_model.get_num_params())
        pin = self.device == "cuda"
        shape = (pc.grad_accum, len(self.local_ranks), pc.batch_size, pc.block_size)
        # two slots: step k's numbers land in one while step k+1 writes the other
        self.host_tok = [torch.empty(shape, dtype=torch.float32, pin_memory=pin) for _ in range(2)] \
            if tc.per_token else None
        self.host_stats = [torch.empty(5, dtype=torch.float32, pin_memory=pin) for _ in range(2)]
        # Bits per byte and document boundaries need GPT-2 token ids (a text corpus, or any token file of
        # GPT-2's 50,257 ids): then a lookup and a sum per micro-batch on the host, on the rows gathered anyway
        self._byte_len = None
        if int(self.corpus_info.get("vocab_size") or _tok.VOCAB_SIZE) == _tok.VOCAB_SIZE:
            try:
                self._byte_len = token_byte_lengths()
            except _tok.TokenizerError as e:  # no GPT-2 vocabulary files here: train on, without bpb
                self.notes.append(f"no bits per byte: {e}")
        # where each target follows an <|endoftext|>, (K, ranks, B, N) per slot, for the split by boundary
        self.host_eot = ([np.zeros(shape, dtype=bool) for _ in range(2)]
                         if tc.per_token and self._byte_len is not None else None)
        self._params = [p for p in self.raw_model.parameters()]
        self.skip = torch.zeros((), dtype=torch.float32, device=self.dev)  # sticky non-finite flag
        # made once: a tensor built from host values every step would be a pageable copy, and
        # such a copy waits for the device (a sync per step)
        w = float(self.dist.world_size)
        self._reduce_div = torch.tensor([w, w, 1.0, 1.0, 1.0], device=self.dev)
        self._zero = torch.zeros((), dtype=torch.float32, device=self.dev)
        self._one = torch.ones((), dtype=torch.float32, device=self.dev)

    # the recipe fields that make the lr schedule (lr_at)
    _SCHEDULE_FIELDS = ("learning_rate", "min_lr", "warmup_steps", "lr_decay_steps")

    def _resumed_recipe(self, saved: TrainConfig, asked: TrainConfig) -> TrainConfig:
        """The checkpoint's recipe with this run's steps and device, and the caller's train_overrides.

        The lr schedule is part of the run: a checkpoint that decayed over its own `steps` (lr_decay_steps
        None) keeps that horizon, so `--steps 20` then `--resume --steps 40` trains under the schedule the
        first run set (lr stays at min_lr after the decay, as nanoGPT's past lr_decay_iters); `steps` only
        says where to stop. A schedule field the caller overrides is used, and a note says what changed.
        """
        if saved.lr_decay_steps is None:
            saved = saved.with_(lr_decay_steps=saved.steps)
        over = {k: v for k, v in (self.train_overrides or {}).items() if k in TrainConfig.__dataclass_fields__}
        tc = saved.with_(steps=asked.steps, device=asked.device, **over)
        changed = [f"{k.replace('_', ' ')} {getattr(saved, k)} -> {v}" for k, v in over.items()
                   if getattr(saved, k) != v]
        if changed:
            self.notes.append(f"the recipe differs from the checkpoint's ({', '.join(changed)}): from "
                              f"the resume on, this run trains under the new values")
        elif tc.steps > saved.lr_decay_steps and "lr_decay_steps" not in over:
            self.notes.append(f"the checkpoint's lr schedule is kept: cosine decay to {saved.min_lr:g} by step "
                              f"{saved.lr_decay_steps}, then {saved.min_lr:g} to step {tc.steps}; "
                              f"--lr-decay-steps sets another")
        return tc

    def _load_weights(self, ckpt: Any) -> None:
        """The checkpoint's weights into the model, or one TrainError naming what does not fit."""
        from nanogpt_viz.engine.checkpoint import describe_mismatch

        problem = describe_mismatch(ckpt.model_state, self.raw_model.state_dict())
        where = f" {ckpt.path}" if getattr(ckpt, "path", None) else ""
        if problem:
            raise TrainError(f"the checkpoint{where} does not fit the model its model_args describe: {problem}")
        try:
            self.raw_model.load_state_dict(ckpt.model_state)
        except RuntimeError as exc:  # dtype or anything describe_mismatch does not know
            first = " ".join(x.strip() for x in str(exc).strip().splitlines()[:3])[:400]
            raise TrainError(f"the checkpoint{where} does not fit the model its model_args describe ({first})") from None
        bad = [k for k, v in ckpt.model_state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise TrainError(f"the checkpoint{where} holds non-finite weights ({len(bad)} of "
                             f"{len(ckpt.model_state)} tensors, e.g. {bad[0]}); it cannot be trained from")

    def _engine_options(self) -> dict[str, Any]:
        """GPT's engine keyword arguments for this run, from the TrainConfig.

        Where Triton runs (CUDA): the output layer and loss as one pass over the logits (fused_loss.py) and
        GELU as its own kernels with its output kept for backward (gelu.py), unless the config says
        otherwise: same numbers, less time. Elsewhere the plain path (the fused ops would run as slower torch
        operations). The residual stream's dtype is the run's residual_dtype (float32: nanoGPT's).
        """
        tc = self.train_config
        fast = fused_loss.available(self.dev)
        return {"fused_loss": fast if tc.fused_loss is None else bool(tc.fused_loss),
                "gelu": ("kept" if fast else "torch") if tc.gelu == "auto" else tc.gelu,
                "residual_dtype": torch.bfloat16 if tc.residual_dtype == "bfloat16" else None}

    # implementation switches of torch's AdamW param groups: how the update runs, not what it computes
    _ADAMW_IMPL_KEYS = ("fused", "foreach", "capturable", "differentiable", "decoupled_weight_decay", "amsgrad",
                        "maximize")

    def _load_optimizer_state(self, state: dict) -> None:
        """Load any AdamW state (ours, nanoGPT's from a GPU or a CPU, any torch) into this fused AdamW.

        A param group saves the recipe (lr, betas, eps, weight decay) and also how the update runs:
        nanoGPT on a CPU saves `fused: None` (it fuses only on CUDA), which would make torch run the
        unfused update, and that one refuses the `found_inf` the step passes; a torch before AdamW
        became Adam with `decoupled_weight_decay` saves no such key, which torch reads as plain Adam
        (L2 weight decay). So the recipe comes from the file and the switches from this optimizer.
        """
        groups = state.get("param_groups") if isinstance(state, dict) else None
        ours = self.optimizer.param_groups
        if not isinstance(groups, list) or len(groups) != len(ours) or not all(
                isinstance(g, dict) and len(g.get("params", ())) == len(o["params"]) for g, o in zip(groups, ours)):
            sizes = [len(g.get("params", ())) if isinstance(g, dict) else "?" for g in groups or ()]
            raise TrainError(f"the checkpoint's optimizer state does not fit this model: its parameter groups hold "
                             f"{sizes} tensors, the model's AdamW groups (decayed, not decayed) hold "
                             f"{[len(o['params']) for o in ours]}")
        fixed = [{**g, **{k: o[k] for k in self._ADAMW_IMPL_KEYS if k in o}} for g, o in zip(groups, ours)]
        if "weight_decay" in (self.train_overrides or {}):  # asked for on purpose: the decayed group takes it
            fixed[0]["weight_decay"] = self.train_config.weight_decay
        self.optimizer.load_state_dict({**state, "param_groups": fixed})
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                st = self.optimizer.state.get(p, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in st and tuple(st[key].shape) != tuple(p.shape):
                        raise TrainError(f"the checkpoint's optimizer state does not fit this model: a {key} of "
                                         f"shape {tuple(st[key].shape)} for a parameter of shape {tuple(p.shape)}")

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> Iterator[RunInfo | EvalReport | StepReport | RunEnd]:
        """Train to `train_config.steps`; always ends with exactly one RunEnd (never raises)."""
        try:
            self._setup()
        except (TrainError, ValueError, OSError) as exc:
            yield RunEnd("error", str(exc), 0)
            return
        except torch.OutOfMemoryError:
            yield RunEnd("oom", self._oom_message(), 0)
            return
        except Exception as exc:  # never a traceback out of run(): the window's thread must see a RunEnd
            yield RunEnd("error", f"the run could not start: {type(exc).__name__}: {exc}", 0)
            return
        tc = self.train_config
        yield RunInfo(self.device, self.device_name, self.dtype, self.compiled,
                      self.raw_model.get_num_params(), self.start_step, tc.steps, self.plan.tokens_per_step,
                      self.plan_config.world_size, str(self.out_dir) if self.out_dir else None,
                      residual_dtype=tc.residual_dtype, history=tuple(self.history),
                      notes=tuple(self.notes) + (self._eval_fixed.notes if self._eval_fixed is not None else ()))
        self._open_record()
        step = self.start_step
        pending: _Pending | None = None
        self._t_last = time.perf_counter()
        self._last_event = None
        end: RunEnd | None = None
        try:
            if self.eval_on and self.start_step == 0 and not self.control.stopped:
                res = self.evaluate(0)  # iteration 0: the untrained model, as the real codes log it
                yield EvalReport(0, res.val_loss, res.protocol, res.val_tokens, res.train_loss_est, res.val_bpb)
                self._t_last = time.perf_counter()
            while step < tc.steps:
                if (self.control.paused or self.control.has_requests) and pending is not None:
                    report = self._finish(pending)  # show the last step before sitting idle
                    pending = None
                    if isinstance(report, RunEnd):
                        end = report
                        break
                    yield report
                while self.control.paused and not self.control.stopped:
                    self.control.wait_while_paused()
                    yield from self._serve_requests()
                    self._last_event, self._t_last = None, time.perf_counter()  # idle time is not step time
                yield from self._serve_requests()
                if self.control.stopped and self.dist.world_size == 1:
                    break
                t_launch = time.perf_counter()
                new = self._launch_step(step)
                step += 1
                if self.device == "mps":
                    torch.mps.synchronize()
                new.t_end = time.perf_counter() - t_launch  # wall time; CUDA uses its events instead
                # CUDA: report step k only once step k+1 is queued, so the readout never idles the GPU.
                # Elsewhere the step has already finished: report it at once.
                ready = [pending, None] if self.device == "cuda" else [pending, new]
                pending = new if self.device == "cuda" else None
                for p in ready:
                    if p is None:
                        continue
                    report = self._finish(p)
                    if isinstance(report, RunEnd):
                        end = report
                        break
                    yield report
                if end is not None:
                    break
                if self._stop_agreed:
                    break
            if end is None and pending is not None:
                report = self._finish(pending)
                if isinstance(report, RunEnd):
                    end = report
                else:
                    yield report
        except torch.OutOfMemoryError:
            self._free_memory()
            end = RunEnd("oom", self._oom_message(), self.steps_done)
        except _SaveFailed as exc:  # a checkpoint_interval save: the run has failed, the last good file stays
            end = self._save_failed_end(RunEnd("error", f"stopped after step {self.steps_done - 1}",
                                               self.steps_done), exc)
            self._save_attempted = True
        except TrainError as exc:  # a sentence for the user (a token id the model cannot embed, ...)
            if pending is not None:  # CUDA: the step before was applied; count it, so the file says so
                try:
                    self._finish(pending)
                except Exception:
                    pass
            end = RunEnd("error", str(exc), self.steps_done)
        except Exception as exc:  # a bug or a device failure: report it, keep the process alive
            end = RunEnd("error", f"training failed at step {step}: {type(exc).__name__}: {exc}", self.steps_done)
        if end is None:
            reason = "finished" if self.steps_done >= tc.steps else "stopped"
            msg = (f"finished {self.steps_done} steps" if reason == "finished"
                   else f"stopped after step {self.steps_done - 1}")
            end = RunEnd(reason, msg, self.steps_done)
        ckpt_path = None
        if self._weights_bad:  # never write non-finite weights: the file on disk (if any) stays as it was
            end = RunEnd(end.reason, end.message + "; " + self._kept_message(), end.step)
        elif (self.out_dir is not None and not getattr(self, "_save_attempted", False)
              and (self.steps_done > self.start_step or end.reason != "error")):
            try:
                ckpt_path = self.save_checkpoint()
            except _SaveFailed as exc:  # a full disk: the run has failed, and says where and how much
                end = self._save_failed_end(end, exc)
        self._close_record(end)
        best = self.best_val_loss if math.isfinite(self.best_val_loss) else None
        yield dataclasses.replace(end, checkpoint=ckpt_path, best_val_loss=best)

    _stop_agreed = False
    steps_done = 0

    def _serve_requests(self) -> Iterator[ModelSnapshot | CheckpointSaved]:
        for what in sorted(self.control.take_requests()):
            if what == "snapshot":
                state = {k: v.detach().to("cpu", copy=True) for k, v in self.raw_model.state_dict().items()}
                yield ModelSnapshot(self.steps_done, self.model_config.to_dict(), state)
            elif what == "checkpoint":
                yield CheckpointSaved(self.steps_done, self.save_checkpoint())

    def _micro_batches(self, step: int, pending: _Pending | None = None):
        pc = self.plan_config
        for m in range(pc.grad_accum):
            for j, r in enumerate(self.local_ranks):
                starts = self.plan.micro_starts(step, m, r)
                xy = gather_rows(self.train_tokens, starts, pc.block_size + 1)
                self._check_ids(xy, starts, self.train_tokens, "train")
                if pending is not None and self._byte_len is not None:
                    self._count_lens(pending, xy, m, j)
                t = torch.from_numpy(xy)
                if self.device == "cuda":
                    t = t.pin_memory().to(self.dev, non_blocking=True)
                else:
                    t = t.to(self.dev)
                yield m, j, t[:, :-1].contiguous(), t[:, 1:].contiguous()

    def _count_lens(self, p: _Pending, xy: np.ndarray, m: int, j: int) -> None:
        """Bytes of the targets and document boundaries of one micro-batch's (B, N+1) rows (host, numpy)."""
        table = self._byte_len
        if p.target_bytes >= 0:
            y = xy[:, 1:]
            if int(y.max(initial=0)) < len(table):
                p.target_bytes += int(table[y].sum())
            else:  # an id past GPT-2's vocabulary (a padded model's corpus): no bytes to count
                p.target_bytes = -1
        is_eot = xy[:, :-1] == _tok.EOT
        p.rows_across += int(is_eot.any(axis=1).sum())
        p.targets_after_eot += int(is_eot.sum())
        if self.host_eot is not None:
            self.host_eot[p.slot][m, j] = is_eot

    def _check_ids(self, xy: np.ndarray, starts: Any, tokens: Any, split: str) -> None:
        """A batch's ids must index the embedding: a max (and min) over the batch, one TrainError naming where.

        Opening a corpus checks a bounded sample of its ids; this sees every id the model is fed.
        """
        vocab = self.model_config.vocab_size
        if xy.size == 0 or (int(xy.max()) < vocab and int(xy.min()) >= 0):
            return
        flat = int(np.argmax((xy >= vocab) | (xy < 0)))
        row, col = divmod(flat, xy.shape[1])
        pos = int(np.asarray(starts).reshape(-1)[row]) + col
        bad = int(xy[row, col])
        where = f"token {pos:,} of the {split} split"
        locate = getattr(tokens, "_locate", None)
        names = getattr(tokens, "part_names", None)
        if locate is not None and names:
            part, off = locate(pos)
            name = names[part]
            dtype = getattr(tokens, "dtype", None)
            path = self.corpus_info.get("path")
            shown = (str(Path(path) / name) if path and Path(path).is_dir() else
                     (path if path and Path(path).name == name else name))
            byte = f", byte {off * dtype.itemsize:,} of the token data" if dtype is not None else ""
            where = f"{shown}, token {off:,}{byte} ({split} split)"
        what = "negative" if bad < 0 else f">= the model's vocabulary of {vocab:,}"
        raise TrainError(f"token id {bad} at {where} is {what}; the file does not hold token ids this model "
                         f"can read (a corrupt or foreign file?). Nothing was trained on that batch")

    def _launch_step(self, step: int) -> _Pending:
        """Queue one optimizer step on the device; nothing here waits for the device."""
        tc = self.train_config
        lr = lr_at(step, tc)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        slot = step % 2
        pending = _Pending(step, lr, slot, 0.0, target_bytes=0 if self._byte_len is not None else -1)
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.dev)
        last = self.n_micro - 1
        for i, (m, j, x, y) in enumerate(self._micro_batches(step, pending)):
            sync_ctx = (self.model.no_sync() if self.dist.world_size > 1 and i < last
                        else contextlib.nullcontext())
            if self._graph_steps:
                torch.compiler.cudagraph_mark_step_begin()
            with sync_ctx:
                with self.autocast:
                    out = self.model(x, y, return_logits=False)
                loss, per_token = out.loss, out.per_token  # per_token: (B, N) float32
                # mean over K micro-batches (and W simulated ranks): same gradient as one big batch;
                # the divide_by_k experiment leaves out the K (DDP still averages the ranks)
                scaled = loss / (self.n_micro if tc.divide_by_k else len(self.local_ranks))
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            loss_sum += loss.detach()
            if self.host_tok is not None:
                self.host_tok[slot][m, j].copy_(per_token.detach(), non_blocking=True)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(),
                                              tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        if self.scaler is not None:  # fp16: inf gradients are the scaler's business (it skips them)
            bad = (~torch.isfinite(loss_sum)).float()
        else:
            bad = (~torch.isfinite(norm) | ~torch.isfinite(loss_sum)).float()
        stop_flag = self._one if self.control.stopped else self._zero
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            # Skip the update on the device for a non-finite step and every one after it, so the
            # weights from before it survive without waiting for the device here.
            torch.maximum(self.skip, bad, out=self.skip)
            if self._fused_adamw:
                self.optimizer.found_inf = self.skip
                self.optimizer.step()
            elif not bool(self.skip):  # a device without torch's fused AdamW: one host read decides
                self.optimizer.step()
        # A finite gradient can still make a non-finite update (a huge lr or weight decay): one fused
        # float32 2-norm over the parameters (0.5 ms for the tiny preset on 2 CPU cores, where max-abs
        # takes 16 ms), read with this step's other numbers (no extra sync). NaN and inf propagate; a
        # weight beyond about 1e19 overflows the square and counts as diverged too (_finish tells the two
        # apart). The sticky flag then skips every later update, and such weights are never saved.
        wbad = (~torch.isfinite(torch.stack(torch._foreach_norm(self._params)).sum())).float()
        torch.maximum(self.skip, wbad, out=self.skip)
        self.optimizer.zero_grad(set_to_none=True)
        stats = torch.stack([loss_sum / self.n_micro, norm.float(), stop_flag, bad, wbad])
        if self.dist.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
            # mean loss over ranks; the norm is the same on every rank; any rank's stop / bad counts
            stats = stats / self._reduce_div
        self.host_stats[slot].copy_(stats, non_blocking=True)
        if self.device == "cuda":
            pending.event = torch.cuda.Event(enable_timing=True)
            pending.event.record()
        return pending

    def _finish(self, p: _Pending) -> StepReport | RunEnd:
        """Turn a launched step into a report (waits only for that step's copies)."""
        if p.event is not None:
            p.event.synchronize()
            if self._last_event is not None:
                dt = self._last_event.elapsed_time(p.event) / 1000.0
            else:
                dt = time.perf_counter() - self._t_last
            self._last_event = p.event
        else:
            dt = p.t_end
        loss, norm, stop, bad, wbad = (float(v) for v in self.host_stats[p.slot].tolist())
        if wbad > 0 and not bad > 0 and math.isfinite(loss):
            self._weights_bad = True
            tc = self.train_config
            what = ("non-finite" if any(not bool(torch.isfinite(w).all()) for w in self._params)
                    else "diverge (weights beyond 1e19)")
            return RunEnd("nonfinite", f"the update of step {p.step} made the weights {what} (loss {loss:.4f} and "
                          f"gradient norm {norm:.4g} were finite; lr {p.lr:g}, weight decay {tc.weight_decay:g}): "
                          f"those weights were not saved. Lower the learning rate or the weight decay", p.step)
        if bad > 0 or not math.isfinite(loss):
            return RunEnd("nonfinite", f"the loss became non-finite ({loss}) at step {p.step}; the weights "
                          f"from before that step are kept. Lower the learning rate or check the data",
                          p.step)
        if stop > 0:
            self._stop_agreed = True
        self.steps_done = p.step + 1
        per_token = position = None
        docs: dict[str, Any] = {}
        if self.host_tok is not None:
            per_token = self.host_tok[p.slot].numpy().copy()  # (K, ranks, B, N)
            self._record_step(p.step, per_token)
            position = per_token.mean(axis=(0, 1, 2))
            if self.host_eot is not None:
                docs = _split_by_eot(per_token, self.host_eot[p.slot])
        if self._byte_len is not None:
            docs.update(rows_across_docs=p.rows_across, targets_after_eot=p.targets_after_eot)
        bpb = None
        if p.target_bytes > 0:  # mean loss x targets = the sum of this process's per-token losses (one process)
            local_targets = self.n_micro * self.plan_config.batch_size * self.plan_config.block_size
            bpb = loss * local_targets / p.target_bytes / math.log(2)
        tokens = self.plan.tokens_per_step
        tps = tokens / dt if dt > 0 else 0.0
        mfu = mfu_datasheet = None
        if self.peak_flops and dt > 0:
            # one device's tokens: torchrun gives each process its share; one process trains all W ranks
            per_device = tokens / self.plan_config.world_size if self.dist.world_size > 1 else tokens
            mfu = estimate_mfu(self.flops_per_token, per_device, dt, self.peak_flops)
            mfu_datasheet = estimate_mfu(self.flops_per_token, per_device, dt, self.datasheet_peak_flops)
        res = None
        tc = self.train_config
        if self.eval_on and (self.steps_done % tc.eval_interval == 0 or self.steps_done == tc.steps):
            res = self.evaluate()
        val = res.val_loss if res is not None else None
        val_bpb = getattr(res, "val_bpb", None) if res is not None else None
        self.history.append((p.step, loss, val if val is not None else math.nan))
        if (tc.checkpoint_interval and self.out_dir is not None and self.steps_done % tc.checkpoint_interval == 0
                and self.steps_done < tc.steps):
            self.save_checkpoint()
        return StepReport(
            step=p.step, epoch=self.plan.epoch(p.step), lr=p.lr, loss=loss, grad_norm=norm,
            tokens_per_s=tps, mfu=mfu, mfu_datasheet=mfu_datasheet, peak_flops=self.peak_flops,
            datasheet_peak_flops=self.datasheet_peak_flops, dt=dt, starts=self.plan.starts(p.step),
            per_token=per_token,
            position_loss=position, ranks=self.local_ranks, val_loss=val,
            tokens_seen=self.steps_done * tokens, world_size=self.plan_config.world_size,
            finished_at=time.perf_counter(), val_protocol=res.protocol if res else None,
            val_tokens=res.val_tokens if res else 0, train_loss_est=res.train_loss_est if res else None,
            bpb=bpb, val_bpb=val_bpb, **docs)

    # ---- the run record (run/record.py, run/history.py) -----------------------------------------
    _writers = ()  # this process's HistoryWriters (set in _open_record)

    def _open_record(self) -> None:
        """run.json (rank 0) and this process's history writers, once the run's settings are known."""
        from nanogpt_viz.run import record
        from nanogpt_viz.run.history import HistoryWriter

        self._writers = []
        if self.out_dir is None:
            return
        pc, mc, tc = self.plan_config, self.model_config, self.train_config
        if tc.per_token:  # each rank its own files: nothing crosses the process group per step
            self._writers = [HistoryWriter(self.out_dir, rank=r, world_size=pc.world_size, K=pc.grad_accum,
                                           B=pc.batch_size, N=pc.block_size, budget_bytes=self.history_budget,
                                           start_step=self.start_step) for r in self.local_ranks]
        if not self.dist.is_master:
            return
        m = self.manifest
        if m is None and record.is_run_dir(self.out_dir):
            m = self.manifest = record.update_manifest(self.out_dir)
        if m is None:
            return
        m.plan, m.model, m.train = pc.to_dict(), mc.to_dict(), tc.to_dict()
        m.world_size = pc.world_size
        m.status, m.end_reason, m.message, m.ended = "running", None, None, None
        m.history = {**(m.history or {}), "budget_bytes": int(self.history_budget), "dtype": "float16",
                     "N": pc.block_size, "K": pc.grad_accum, "W": pc.world_size, "B": pc.batch_size,
                     "rows_per_step": pc.grad_accum * pc.world_size * pc.batch_size if tc.per_token else 0,
                     "bytes_per_step": 2 * pc.grad_accum * pc.world_size * pc.batch_size * pc.block_size
                     if tc.per_token else 0,
                     "thinned_from_step": m.history.get("thinned_from_step") if m.history else None}
        record.write_manifest(self.out_dir, m)

    def _record_step(self, step: int, per_token: np.ndarray) -> None:
        """Append this step's (K, ranks, B, N) losses to the history: each local rank its own rows."""
        if not self._writers:
            return
        try:
            for j, w in enumerate(self._writers):
                w.append(step, per_token[:, j])
        except OSError as exc:  # a full disk stops the history, not the training
            for w in self._writers:
                w.close()
            self._writers = []
            self._history_note = (f"the per-token history stopped at step {step:,}: "
                                  f"{getattr(exc, 'strerror', None) or exc}")

    def _close_record(self, end: RunEnd) -> None:
        """Close the history and write the end into run.json (rank 0)."""
        from nanogpt_viz.run import record

        writers, self._writers = self._writers, []
        for w in writers:
            w.close()
        if self.out_dir is None or not self.dist.is_master or self.manifest is None:
            return
        m = self.manifest
        m.status, m.end_reason, m.message = str(end.reason), str(end.reason), end.message
        m.ended, m.steps_done = record.now_iso(), int(self.steps_done)
        notes = [getattr(self, "_history_note", None)]
        if writers:
            m.history["thinned_from_step"] = writers[0].thinned_from_step
            notes.append(writers[0].note)
        m.notes = [*m.notes, *(n for n in notes if n and n not in m.notes)]
        try:
            record.write_manifest(self.out_dir, m)
        except OSError:  # a full disk: status.json (the CLI's) and the RunEnd still say how it ended
            pass

    def _eval_plan(self, iteration: int) -> EvalPlan:
        if self._eval_fixed is not None:
            return self._eval_fixed
        pc, tc = self.plan_config, self.train_config
        plan = eval_plan(self.eval_protocol, val_shards=self._val_shards, N=pc.block_size, B=pc.batch_size,
                         W=pc.world_size, eval_batches=tc.eval_batches, iteration=iteration,
                         seed=getattr(pc, "effective_seed", pc.seed),
                         train_len=len(self.train_tokens), replay=self.eval_replay,
                         max_targets=WHOLE_MAX_TARGETS if self.device == "cuda" else WHOLE_MAX_TARGETS_CPU)
        if self.eval_protocol != "nanogpt":  # the same batches at every evaluation
            self._eval_fixed = plan
        return plan

    @torch.no_grad()
    def evaluate(self, iteration: int | None = None) -> EvalResult | None:
        """The val loss under the run's protocol (evaluation.py) after `iteration` steps (default: done).

        The mean of every counted per-token loss of the protocol's batches: equal to what the real
        code prints. Model in eval mode. Cost: the protocol's rows (evaluation.py: nanogpt
        2*eval_iters*B, build-nanogpt / llmc batches*W*B, whole at most WHOLE_MAX_TARGETS targets),
        split across DDP processes (build-nanogpt / llmc: each rank its own rows, as those codes do)
        and summed with one all-reduce; every process gets the result.
        """
        if not self.eval_on:
            return None
        it = self.steps_done if iteration is None else int(iteration)
        plan = self._eval_plan(it)
        N, world, me = plan.N, self.dist.world_size, self.dist.rank
        per_rank = plan.protocol in ("build-nanogpt", "llmc")
        # val loss sum, train loss sum, bytes of the counted val targets (for val_bpb)
        acc = torch.zeros(3, dtype=torch.float32 if self.device == "mps" else torch.float64, device=self.dev)
        table = self._byte_len
        cols = torch.arange(N)
        self.raw_model.eval()
        try:
            for i, b in enumerate(plan.batches):
                if world > 1 and (b.rank if per_rank else i % world) != me:
                    continue
                data = self.val_tokens if b.split == "val" else self.train_tokens
                xy_np = gather_rows(data, b.starts, N + 1)
                self._check_ids(xy_np, b.starts, data, b.split)
                xy = torch.from_numpy(xy_np)
                x, y = xy[:, :-1].contiguous(), xy[:, 1:].clone()
                if b.skip is not None:  # targets an earlier row already counted (whole's last row)
                    y[cols[None, :] < torch.from_numpy(b.skip)[:, None]] = -1
                if table is not None and b.split == "val":
                    if int(xy_np.max(initial=0)) < len(table):
                        yn = y.numpy()
                        acc[2] += float(table[np.maximum(yn, 0)][yn >= 0].sum())
                    else:
                        table = None
                with self.autocast:
                    loss_sum = self.raw_model(x.to(self.dev), y.to(self.dev), reduction="sum").loss
                acc[0 if b.split == "val" else 1] += loss_sum.to(acc.dtype)
            if world > 1:
                import torch.distributed as dist

                dist.all_reduce(acc, op=dist.ReduceOp.SUM)
        finally:
            self.raw_model.train()
        val_sum, train_sum, val_bytes = acc.tolist()
        val = val_sum / plan.targets("val")
        train_est = train_sum / plan.targets("train") if plan.protocol == "nanogpt" else None
        if val < self.best_val_loss:
            self.best_val_loss = val
        res = EvalResult(val, plan.protocol, plan.distinct_targets("val"), train_est)
        if table is not None and val_bytes > 0:  # every counted val target's loss over their bytes
            res = dataclasses.replace(res, val_bpb=val_sum / val_bytes / math.log(2))
        return res

    # ---- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self) -> str | None:
        """Write `out_dir/ckpt.pt` (rank 0 only): nanoGPT's keys plus what exact resume needs."""
        from nanogpt_viz.engine.checkpoint import NonFiniteWeights, save_checkpoint

        if self.out_dir is None or not self.dist.is_master:
            return None
        hist = torch.tensor(list(self.history), dtype=torch.float64).reshape(-1, 3)
        config = {**self.train_config.to_dict(), **{f"plan_{k}": v for k, v in self.plan_config.to_dict().items()},
                  "dataset": str(self.corpus_info.get("path", "")), "init_from": "scratch"}
        extra = {
            "format": 1,
            "plan": self.plan_config.to_dict(),
            "train": self.train_config.to_dict(),
            "model_preset": self.model_preset,
            "corpus": {k: v for k, v in self.corpus_info.items() if isinstance(v, (str, int, float))},
            "torch_rng": torch.get_rng_state(),
            "history": hist,
        }
        if self.device == "cuda":
            extra["cuda_rng"] = torch.cuda.get_rng_state()
        if self._weights_bad:
            raise TrainError("the weights are non-finite and are never saved; " + self._kept_message())
        try:
            path = save_checkpoint(Path(self.out_dir) / "ckpt.pt", model_state=self.raw_model.state_dict(),
                                   optimizer_state=self.optimizer.state_dict(),
                                   model_args=self.model_config.to_dict(), iter_num=self.steps_done,
                                   best_val_loss=self.best_val_loss if math.isfinite(self.best_val_loss) else 1e9,
                                   config=config, extra=extra)
        except NonFiniteWeights:  # the last line of defence: found at the file, not by the step check
            self._weights_bad = True
            raise TrainError("the weights became non-finite and were not saved; " + self._kept_message()) from None
        except OSError as exc:  # full disk, quota, permissions: the previous file is intact
            raise _SaveFailed(exc, str(self.out_dir), self._checkpoint_bytes()) from None
        self._saved_step = self.steps_done
        return str(path)

    def _checkpoint_bytes(self) -> int:
        """About how large ckpt.pt is: the weights, AdamW's two moments, and a little for the rest."""
        seen: dict[int, int] = {}  # storages once (the output layer shares the embedding's)
        tensors = list(self.raw_model.state_dict().values())
        for st in self.optimizer.state.values():
            tensors += [v for v in st.values() if isinstance(v, torch.Tensor)]
        for t in tensors:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return sum(seen.values()) + (1 << 20)

    def _kept_message(self) -> str:
        where = Path(self.out_dir) / "ckpt.pt" if self.out_dir is not None else None
        if where is not None and self._saved_step is not None and where.exists():
            return f"{where} still holds the weights after {self._saved_step} steps"
        return "no checkpoint was written"

    def _save_failed_end(self, end: RunEnd, exc: "_SaveFailed") -> RunEnd:
        """A run whose checkpoint could not be written has failed: say why, where, and what is kept."""
        cause = exc.cause
        if getattr(cause, "errno", None) in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            why = f"no space left on {exc.directory} (needed about {max(1, round(exc.needed / 1e6))} MB)"
        else:
            why = f"could not write to {exc.directory} ({getattr(cause, 'strerror', None) or cause})"
        return RunEnd("error", f"{end.message}, but the checkpoint was not saved: {why}; {self._kept_message()}",
                      end.step, save_failed=True, save_dir=exc.directory, save_needed_bytes=exc.needed)

    # ---- failure handling -------------------------------------------------------------------
    def _free_memory(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def _oom_message(self) -> str:
        pc = self.plan_config
        return (f"the {self.device.upper()} device ran out of memory with batch size B={pc.batch_size} and block "
                f"size N={pc.block_size}; lower the batch size B (raise gradient accumulation K to keep the "
                f"tokens per step), lower N, or pick a smaller model preset")


def sample_text(model: Any, prompt_ids: list[int], max_new_tokens: int = 100, temperature: float = 0.8,
                top_k: int | None = 200, seed: int | None = None) -> list[int]:
    """Generate continuation ids from a GPT (on whatever device it lives on)."""
    device = next(model.parameters()).device
    if seed is not None:
        torch.manual_seed(seed)
    ids = prompt_ids or [50256]
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k)
    finally:
        model.train(was_training)
    return out[0, len(ids):].tolist()


__all__ = ["Trainer", "TrainControl", "TrainError", "RunInfo", "StepReport", "EvalReport", "RunEnd", "ModelSnapshot",
           "CheckpointSaved", "DistInfo",
           "detect_device", "resolve_dtype", "lr_at", "sample_text", "PEAK_FLOPS",
           "DATASHEET_PEAK_FLOPS"]
