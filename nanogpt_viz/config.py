"""Frozen configuration records shared by the CLI, the engine and the GUI.

Nothing here imports Qt or torch: these are plain values that cross threads and
processes (and go into checkpoints as plain dicts).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

SAMPLING_MODES = ("sequential", "llmc", "shuffled", "random", "sliding")
# the modes that reproduce a real loader shard by shard (rows never cross a shard boundary)
LOADER_MODES = ("sequential", "llmc", "shuffled")
SAMPLING_LABELS = {
    "sequential": "build-nanogpt DataLoaderLite",
    "llmc": "llm.c DataLoader",
    "shuffled": "llm.c DataLoader, shuffled",
    "random": "nanoGPT get_batch",
    "sliding": "sliding window",
}
SAMPLING_HELP = {
    "sequential": "build-nanogpt's DataLoaderLite: shard by shard, rank r at B*N*r, +B*N*W per call, "
                  "each rank's own bound at a shard's end",
    "llmc": "llm.c's DataLoader (no shuffle): W*B*N-token samples per shard, all ranks switch together",
    "shuffled": "llm.c's DataLoader with shuffling: mt19937 seeded seed+rank (42: llm.c's own order)",
    "random": "nanoGPT's get_batch: B uniform offsets per call, with replacement",
    "sliding": "rows every S tokens (S=1 with B>1 is the misconception the app corrects)",
}
# the seed each mode uses when none is given: llm.c seeds its shuffle with 42 + rank, nanoGPT 1337 + rank
DEFAULT_SEEDS = {"shuffled": 42}
DEFAULT_SEED = 1337
# one range for every seed (plan, train, sample, window): llm.c's manual_seed takes an unsigned 32-bit
# seed, torch.manual_seed at most 2**64-1; 0..2**32-1 is what all of them read the same way
SEED_MAX = 2**32 - 1
SPLITS = ("train", "val")

GPT2_VOCAB_SIZE = 50257  # what the tokenizer emits
GPT2_PADDED_VOCAB = 50304  # nanoGPT pads to a multiple of 64 for speed


def _finite_number(value: Any) -> bool:
    """A real, finite int or float (not bool, not NaN, not +-inf)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and value - value == 0)  # inf - inf and nan - nan are nan


class _Record:
    """Shared by the frozen config records: copy-with-changes and plain-dict round trips."""

    def with_(self, **changes: Any):
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Build from a dict, ignoring keys this version does not know (older/newer files)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class PlanConfig(_Record):
    """How batches are cut out of a token stream.

    block_size N, batch_size B (rows per micro-batch per rank), grad_accum K
    (micro-batches per rank per optimizer step), world_size W (DDP ranks).
    """

    block_size: int = 64
    batch_size: int = 4
    grad_accum: int = 1
    world_size: int = 1
    sampling: str = "sequential"
    stride: int = 1
    seed: int | None = None  # None: the mode's own (42 for llm.c's shuffle, 1337 otherwise)
    split: str = "train"

    @property
    def effective_seed(self) -> int:
        return self.seed if self.seed is not None else DEFAULT_SEEDS.get(self.sampling, DEFAULT_SEED)

    @property
    def rows_per_step(self) -> int:
        return self.grad_accum * self.world_size * self.batch_size

    @property
    def tokens_per_step(self) -> int:
        return self.rows_per_step * self.block_size

    def problems(self) -> list[str]:
        """Human-readable reasons this configuration cannot be used (empty when fine)."""
        out = []
        for name, label in (("block_size", "block size N"), ("batch_size", "batch size B"),
                            ("grad_accum", "gradient accumulation K"), ("world_size", "world size W")):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                out.append(f"{label} must be a whole number >= 1 (got {value!r})")
        if self.sampling not in SAMPLING_MODES:
            out.append(f"sampling must be one of {', '.join(SAMPLING_MODES)} (got {self.sampling!r})")
        if self.sampling == "sliding" and (not isinstance(self.stride, int) or self.stride < 1):
            out.append(f"stride S must be a whole number >= 1 (got {self.stride!r})")
        if self.split not in SPLITS:
            out.append(f"split must be 'train' or 'val' (got {self.split!r})")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or not 0 <= self.seed <= SEED_MAX):
            out.append(f"seed must be a whole number in 0..{SEED_MAX} (got {self.seed!r})")
        return out



# Plan presets the GUI offers; the first reads well on screen.
PLAN_PRESETS: dict[str, PlanConfig] = {
    "Readable (N=16, B=4)": PlanConfig(block_size=16, batch_size=4),
    "Founding example (N=1024, B=4)": PlanConfig(block_size=1024, batch_size=4),
    "nanoGPT shakespeare-char (N=256, B=64)": PlanConfig(block_size=256, batch_size=64, sampling="random"),
    "nanoGPT GPT-2 124M (N=1024, B=12, K=40)": PlanConfig(
        block_size=1024, batch_size=12, grad_accum=40, sampling="random"),
    "build-nanogpt (N=1024, B=64, K=8)": PlanConfig(block_size=1024, batch_size=64, grad_accum=8),
    "Stride-1 sliding (misconception, B=4)": PlanConfig(block_size=16, batch_size=4, sampling="sliding", stride=1),
}


@dataclass(frozen=True)
class ModelConfig(_Record):
    """Exactly nanoGPT's GPTConfig fields, so `model_args` in a checkpoint round-trips."""

    block_size: int = 1024
    vocab_size: int = GPT2_PADDED_VOCAB
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True

    def problems(self) -> list[str]:
        out = []
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                out.append(f"{name} must be a whole number >= 1")
        if not out and self.n_embd % self.n_head:
            out.append(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            out.append("dropout must be in [0, 1)")
        return out



MODEL_PRESETS: dict[str, ModelConfig] = {
    # trains in seconds on 2 CPU cores
    "tiny": ModelConfig(block_size=64, n_layer=2, n_head=2, n_embd=64, bias=False),
    # nanoGPT's shakespeare-char size (with the GPT-2 vocabulary)
    "small": ModelConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.0, bias=False),
    # GPT-2 as nanoGPT's train.py trains it from scratch: vocabulary padded to 50304, no biases,
    # no dropout (OpenAI's released weights have biases; their checkpoints carry bias=True)
    "gpt2": ModelConfig(block_size=1024, n_layer=12, n_head=12, n_embd=768, bias=False),
    "gpt2-medium": ModelConfig(block_size=1024, n_layer=24, n_head=16, n_embd=1024, bias=False),
}

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# the residual stream between blocks: float32 as nanoGPT (its embeddings are float32), or bfloat16 as
# llm.c keeps every activation (less memory traffic, a little less precision; bf16 training only)
RESIDUAL_DTYPES = ("float32", "bfloat16")
# how a validation pass picks its batches (evaluation.py): as nanoGPT, build-nanogpt or llm.c do, or
# every val target once
EVAL_PROTOCOLS = ("nanogpt", "build-nanogpt", "llmc", "whole")
# the MLP's GELU op (engine/model.py GELU_OPS): torch's nn.GELU, or kernels/gelu.py's with its output kept
GELU_OPTIONS = ("torch", "kept")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TrainConfig(_Record):
    """nanoGPT's optimisation recipe (train.py defaults where sensible for small runs)."""

    # optimizer steps in all, numbered 0..steps-1 (resume continues to this total); nanoGPT's max_iters=M runs
    # M+1 steps (iterations 0..M: it stops once iter_num > max_iters), so steps = max_iters + 1 matches it
    steps: int = 200
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 20
    lr_decay_steps: int | None = None  # None: decay over `steps`
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 50  # 0 disables
    # batches per evaluation: nanoGPT's eval_iters, build-nanogpt's val_loss_steps or llm.c's
    # val_num_batches, by eval_protocol; 0: that code's own default (200, 20, 20); unused by "whole"
    eval_batches: int = 4
    # "auto" (follows the plan's sampling: random -> nanogpt, sequential -> build-nanogpt,
    # llmc/shuffled -> llmc, otherwise whole) or one of EVAL_PROTOCOLS (see evaluation.py)
    eval_protocol: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    compile: bool | None = None  # None: on for CUDA, off elsewhere
    seed: int = 1337
    per_token: bool = True  # copy the (B, N) per-token loss off the device each step
    checkpoint_interval: int = 0  # 0: only at the end / on stop
    residual_dtype: str = "float32"  # one of RESIDUAL_DTYPES
    # The experiment of the classic accumulation bug: False sums the K micro-batch losses without dividing
    # by K, so every gradient is K times too large (and clipping, if on, fires every step)
    divide_by_k: bool = True
    # Engine options (how the step computes, not what: the model's GPT(fused_loss=, gelu=) arguments and
    # torch.compile's mode). None / "auto": the fast path where its Triton kernels run (CUDA), the plain
    # path elsewhere; benchmarks/engine.py sets them to compare variants.
    fused_loss: bool | None = None
    gelu: str = "auto"  # "auto", or one of GELU_OPTIONS
    compile_mode: str | None = None  # torch.compile(mode=...): None is its default

    def problems(self) -> list[str]:
        out = []
        if not isinstance(self.steps, int) or self.steps < 1:
            out.append("steps must be a whole number >= 1")
        # NaN compares false both ways: `not x >= 0` catches it, `x < 0` would not
        for name, label, value in (("learning_rate", "learning rate", self.learning_rate),
                                   ("min_lr", "min lr", self.min_lr), ("weight_decay", "weight decay", self.weight_decay),
                                   ("grad_clip", "grad clip", self.grad_clip)):
            if not _finite_number(value):
                out.append(f"{label} must be a finite number (got {value!r})")
        if _finite_number(self.learning_rate) and not self.learning_rate > 0:
            out.append("learning rate must be > 0")
        if _finite_number(self.min_lr) and not self.min_lr >= 0:
            out.append("min lr must be >= 0")
        if _finite_number(self.weight_decay) and not self.weight_decay >= 0:
            out.append("weight decay must be >= 0")
        for label, value in (("beta1", self.beta1), ("beta2", self.beta2)):
            if not _finite_number(value) or not 0.0 <= value < 1.0:
                out.append(f"{label} must be in [0, 1) (got {value!r})")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed <= SEED_MAX:
            out.append(f"seed must be a whole number in 0..{SEED_MAX} (got {self.seed!r})")
        if self.warmup_steps < 0:
            out.append("warmup steps must be >= 0")
        if self.lr_decay_steps is not None and self.lr_decay_steps < 1:
            out.append("lr decay steps must be >= 1")
        if self.eval_interval < 0:
            out.append("eval interval must be >= 0")
        if not isinstance(self.eval_batches, int) or self.eval_batches < 0:
            out.append("eval batches must be a whole number >= 0 (0: the protocol's own default)")
        if self.eval_protocol not in ("auto", *EVAL_PROTOCOLS):
            out.append(f"eval protocol must be one of auto, {', '.join(EVAL_PROTOCOLS)} (got {self.eval_protocol!r})")
        if self.device not in DEVICES:
            out.append(f"device must be one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            out.append(f"dtype must be one of {', '.join(DTYPES)}")
        if _finite_number(self.grad_clip) and not self.grad_clip >= 0:
            out.append("grad clip must be >= 0 (0 turns clipping off)")
        if self.residual_dtype not in RESIDUAL_DTYPES:
            out.append(f"residual dtype must be one of {', '.join(RESIDUAL_DTYPES)}")
        elif self.residual_dtype == "bfloat16" and self.dtype not in ("auto", "bfloat16"):
            out.append("a bfloat16 residual stream needs bfloat16 training (dtype bfloat16 or auto)")
        if self.gelu not in ("auto", *GELU_OPTIONS):
            out.append(f"gelu must be one of auto, {', '.join(GELU_OPTIONS)} (got {self.gelu!r})")
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            out.append(f"compile mode must be one of {', '.join(COMPILE_MODES)} (got {self.compile_mode!r})")
        return out



__all__ = [
    "SAMPLING_MODES", "LOADER_MODES", "SAMPLING_LABELS", "SAMPLING_HELP", "DEFAULT_SEEDS", "DEFAULT_SEED", "SEED_MAX", "SPLITS", "GPT2_VOCAB_SIZE", "GPT2_PADDED_VOCAB",
    "PlanConfig", "PLAN_PRESETS", "ModelConfig", "MODEL_PRESETS", "DEVICES", "DTYPES", "RESIDUAL_DTYPES",
    "EVAL_PROTOCOLS", "GELU_OPTIONS", "COMPILE_MODES", "TrainConfig",
]
