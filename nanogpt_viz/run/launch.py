"""Launching `torchrun` for multi-GPU / multi-node runs, and stopping the whole process group.

Pure (no Qt): the window shows the exact command (copyable) and runs it through `RunProcess`;
progress comes back through the run directory (run/record.py, run/reader.py).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from nanogpt_viz.run.record import STOP_REQUEST
from nanogpt_viz.config import MODEL_PRESETS, ModelConfig, PlanConfig, TrainConfig

# Every job the window launches gets these. Never let it turn on NVLink multicast (it can take a shared host's
# GPUs down); and a rank killed by a signal (an abort in a C++ library, say) writes its Python stack into
# torchrun.log, which the window shows when the job fails.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
            "PYTHONFAULTHANDLER": "1"}


# TrainConfig field -> the `nanogpt-viz train` flag that sets it, and how train_args writes a value (None:
# the flag is left out, the CLI's default then being the same). One table for the torchrun command the window
# builds; tests/test_launch.py checks every TrainConfig field is in it or in TRAIN_FIELDS_WITHOUT_FLAG and
# round-trips through the CLI's parser, so the window can no longer drop a setting.
def _num(v):
    return repr(float(v))


def _on_off(flag_off: str):
    return lambda v: [] if v else [flag_off]


TRAIN_FLAGS: tuple[tuple[str, Any], ...] = (
    ("steps", lambda v: ["--steps", str(v)]),
    ("learning_rate", lambda v: ["--lr", _num(v)]),
    ("min_lr", lambda v: ["--min-lr", _num(v)]),
    ("warmup_steps", lambda v: ["--warmup-steps", str(v)]),
    ("lr_decay_steps", lambda v: [] if v is None else ["--lr-decay-steps", str(v)]),
    ("weight_decay", lambda v: ["--weight-decay", _num(v)]),
    ("grad_clip", lambda v: ["--grad-clip", _num(v)]),
    ("eval_interval", lambda v: ["--eval-interval", str(v)]),
    ("eval_batches", lambda v: ["--eval-batches", str(v)] if v > 0 else []),
    ("eval_protocol", lambda v: [] if v == "auto" else ["--eval-protocol", v]),
    ("device", lambda v: ["--device", v]),
    ("dtype", lambda v: ["--dtype", v]),
    ("compile", lambda v: [] if v is None else ["--compile" if v else "--no-compile"]),
    ("per_token", _on_off("--no-per-token")),
    ("checkpoint_interval", lambda v: ["--checkpoint-interval", str(v)]),
    ("residual_dtype", lambda v: ["--residual-dtype", v]),
    ("divide_by_k", _on_off("--no-divide-by-k")),
)
TRAIN_FIELDS_WITHOUT_FLAG = {
    "beta1": "nanoGPT's AdamW betas (0.9, 0.95): fixed, no setting anywhere",
    "beta2": "nanoGPT's AdamW betas (0.9, 0.95): fixed, no setting anywhere",
    "seed": "the plan's --seed seeds the model too (the CLI has one seed)",
    "fused_loss": "an engine variant for benchmarks/engine.py; the default (the fast path where it runs) has the "
                  "plain path's numbers",
    "gelu": "an engine variant for benchmarks/engine.py; both ops compute nanoGPT's exact GELU",
    "compile_mode": "an engine variant for benchmarks/engine.py (torch.compile's modes gained nothing here)",
}


def train_flags(train: TrainConfig) -> list[str]:
    """The `train` flags of every TrainConfig setting, from TRAIN_FLAGS."""
    out: list[str] = []
    for name, write in TRAIN_FLAGS:
        out += write(getattr(train, name))
    return out


def train_args(corpus: str, plan: PlanConfig, preset: str, model: ModelConfig, train: TrainConfig,
               out_dir: str | os.PathLike, resume: bool = False, history_budget: int | None = None,
               overwrite: bool = False) -> list[str]:
    """`nanogpt-viz train` arguments that reproduce these settings (world size comes from torchrun).

    Every rank then writes the run record itself: rank 0 run.json, each rank its own history/ files."""
    args = ["train", str(corpus), "--block-size", str(plan.block_size), "--batch-size", str(plan.batch_size),
            "--grad-accum", str(plan.grad_accum), "--sampling", plan.sampling,
            "--split", plan.split, "--preset", preset]
    if plan.seed is not None:  # None: the mode's own seed, which the CLI picks the same way
        args += ["--seed", str(plan.seed)]
    if plan.sampling == "sliding":
        args += ["--stride", str(plan.stride)]
    base = MODEL_PRESETS.get(preset)
    for name in ("n_layer", "n_head", "n_embd", "vocab_size", "dropout"):
        value = getattr(model, name)
        if base is None or getattr(base, name) != value:
            args += ["--" + name.replace("_", "-"), str(value)]
    if model.block_size != plan.block_size:  # the CLI's model context follows N unless set apart
        args += ["--model-block-size", str(model.block_size)]
    if base is None or base.bias != model.bias:
        args += ["--bias", "true" if model.bias else "false"]
    args += train_flags(train) + ["--out", str(out_dir), "--json"]
    if history_budget is not None:
        args += ["--history-budget", str(int(history_budget))]
    if resume:
        args.append("--resume")
    elif overwrite:
        args.append("--overwrite")
    return args


def torchrun_command(args: Sequence[str], nproc: int, hosts: Sequence[str] = (), node_rank: int = 0,
                     port: int = 29500, python: str | None = None) -> list[str]:
    """torchrun for one node (`--standalone`) or for node `node_rank` of a host list."""
    cmd = [python or sys.executable, "-m", "torch.distributed.run"]
    if len(hosts) > 1:
        cmd += [f"--nnodes={len(hosts)}", f"--node_rank={node_rank}", f"--nproc_per_node={nproc}",
                "--rdzv_backend=c10d", f"--rdzv_endpoint={hosts[0]}:{port}", "--rdzv_id=nanogpt-viz"]
    else:
        cmd += ["--standalone", f"--nproc_per_node={nproc}"]
    return cmd + ["-m", "nanogpt_viz", *args]


def parse_hosts(text: str) -> list[str]:
    hosts = [h for h in text.replace(",", " ").split() if h]
    for h in hosts:
        if any(c in h for c in "/\\;|&$`'\""):
            raise ValueError(f"{h!r} is not a host name")
    return hosts


def shell_line(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


class RunProcess:
    """A torchrun job in its own process group: Stop reaches every rank."""

    def __init__(self, cmd: Sequence[str], run_dir: str | os.PathLike, env: dict | None = None):
        self.cmd = list(cmd)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stop_file = self.run_dir / STOP_REQUEST
        if self.stop_file.exists():
            self.stop_file.unlink()
        self.log_path = self.run_dir / "torchrun.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self._log, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **SAFE_ENV, **(env or {})}, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None and not self._log.closed:
            self._log.close()
        return code

    def request_stop(self) -> None:
        """Ask every rank to stop after its current step (they write the checkpoint and exit 0)."""
        try:
            self.stop_file.touch()
        except OSError:
            pass

    def stop(self, grace: float = 30.0) -> int:
        """Request a clean stop; if the job has not ended after `grace` s, SIGTERM then SIGKILL the group."""
        self.request_stop()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.poll() is None:
            time.sleep(0.05)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + 5.0
            while time.monotonic() < end and self.poll() is None:
                time.sleep(0.05)
        return self.proc.wait()

    def tail_log(self, n_bytes: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()[-n_bytes:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace")
