"""Exact replay of the batch start offsets nanoGPT's ``train.py`` drew.

nanoGPT picks every batch with ``torch.randint(len(data) - block_size, (batch_size,))`` on the
CPU generator, which each rank seeds with ``torch.manual_seed(1337 + rank)``. Between the seed
and the first batch, building ``GPT(config)`` on the CPU consumes a fixed, shape-determined
number of generator outputs; after it, the only consumers (with dropout 0, or dropout on a
CUDA/MPS device) are the batch draws themselves. So the offsets of any batch follow from
counting how many 32-bit outputs came before it and reading the Mersenne Twister there.

What we rely on (each checked in tests/test_nanogpt_replay.py against torch itself, and against
nanoGPT's real train.py in a scratch run, see the module's report):

* torch's CPU generator is the standard MT19937 seeded with ``init_genrand(seed)``; every
  32-bit output is one tempered MT word.
* ``torch.randint(high, ...)`` for int64 on the CPU takes one output ``u`` per element and
  yields ``u % high`` for small ranges; from a threshold on it takes two (``hi``, then ``lo``)
  and yields ``((hi << 32) | lo) % high``. The threshold is ``2**32`` up to torch 2.6 and
  ``2**28`` from torch 2.7 (pytorch PR #144819, against modulo bias), so for a train.bin of
  about 0.27 to 4.3 billion tokens the replay must know which torch trained the run:
  ``randint_64bit_from`` (default: what the installed torch does, probed once).
* ``Tensor.uniform_`` (float32) takes one output per element. ``Tensor.normal_`` (float32,
  contiguous) takes ``n`` outputs for ``n >= 16``, plus 16 more when ``n % 16`` (the kernel
  redraws the last 16); below 16 elements it makes double-precision Box-Muller pairs (4
  outputs a pair) and keeps the spare sample in the generator for the next small call.
* nanoGPT's draw order: the first train batch before the loop; at each iteration, on rank 0
  only and when ``iter_num % eval_interval == 0``, ``estimate_loss`` draws ``eval_iters``
  train batches then ``eval_iters`` val batches; then every micro-step draws the *next* batch
  right after its forward. So micro-step 0 of iteration i trains on the batch drawn by the
  last micro-step of iteration i-1, before the evaluation at i.

Skipping hundreds of millions of outputs is done with the MT19937 jump-ahead: ``x**n`` modulo
the generator's characteristic polynomial (found once with Berlekamp-Massey, ~0.1 s), applied
to a window of the untempered output sequence. A query at any iteration costs ~0.05 s per
rank and constant memory; states are cached so nearby queries only step forward.

Pure numpy (torch is imported only to probe which randint rule the installed torch follows,
on a private generator). No Qt.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import numpy as np

from nanogpt_viz.data.mt19937 import _N, advance, bitgen, get_state, seed_key

__all__ = ["NanoGPTReplay", "RunDraws", "plan_settings", "model_init_draws", "replay_from_files",
           "torch_state_to_mt", "installed_randint_64bit_from", "BASE_SEED"]

BASE_SEED = 1337  # train.py: torch.manual_seed(1337 + seed_offset), seed_offset = ddp_rank

_U32 = np.uint32

# nanoGPT's train.py defaults for the keys we read from a checkpoint's `config`
_CONFIG_DEFAULTS = {"eval_interval": 2000, "eval_iters": 200, "eval_only": False,
                    "init_from": "scratch", "device": "cuda", "dropout": 0.0}
_CONFIG_REQUIRED = ("batch_size", "block_size", "gradient_accumulation_steps")
_MODEL_KEYS = ("n_layer", "n_embd", "block_size", "vocab_size", "bias")


@lru_cache(maxsize=1)
def installed_randint_64bit_from() -> int:
    """The smallest range for which the installed torch's CPU randint takes 64 random bits.

    Probed on a private generator (the global one is not touched): 2**28 on torch >= 2.7,
    2**32 before.
    """
    import torch

    for threshold in (1 << 28, 1 << 32):
        g = torch.Generator()
        g.manual_seed(0)
        torch.randint(threshold, (1,), generator=g)
        if torch_state_to_mt(g.get_state())[1] == 2:
            return threshold
    return 1 << 32


def torch_state_to_mt(state: Any) -> tuple[np.ndarray, int]:
    """(key, pos) of numpy's MT19937 equal to a torch CPU generator state (torch.get_rng_state()).

    The 5056-byte state starts with uint64 seed, int32 left, int32 seeded, uint64 next, then
    624 uint64 words; numpy's pos is 625 - left.
    """
    raw = np.asarray(state, dtype=np.uint8).tobytes()
    left = int(np.frombuffer(raw, dtype="<i4", count=1, offset=8)[0])
    key = np.frombuffer(raw, dtype="<u8", count=_N, offset=24).astype(_U32)
    return key, _N + 1 - left


# --------------------------------------------------------------------------- model construction

def _normal_draws(n: int, spare: bool) -> tuple[int, bool]:
    """Outputs Tensor.normal_ takes on a contiguous float32 CPU tensor of n elements."""
    if n >= 16:
        return n + (16 if n % 16 else 0), spare
    count = 0
    for _ in range(n):
        if spare:
            spare = False
        else:
            count, spare = count + 4, True
    return count, spare


def model_init_draws(model_args: dict) -> int:
    """Generator outputs consumed by constructing nanoGPT's ``GPT(GPTConfig(**model_args))``.

    Construction order: default inits (Embedding: normal_; Linear: kaiming_uniform_ on the
    weight and uniform_ on the bias) of wte, wpe, each block's c_attn, c_proj, c_fc, c_proj,
    then lm_head; then ``apply(_init_weights)`` draws normal_ for wte (by then the tied lm_head
    matrix), wpe, every block Linear, and lm_head again; then normal_ for each c_proj.weight.
    """
    missing = [k for k in _MODEL_KEYS if k not in model_args]
    if missing:
        raise ValueError(f"model_args lacks {', '.join(missing)}, so the model's initialisation "
                         "draws cannot be counted.")
    v, c, t = int(model_args["vocab_size"]), int(model_args["n_embd"]), int(model_args["block_size"])
    n_layer, bias = int(model_args["n_layer"]), bool(model_args["bias"])
    linears = [(3 * c, c), (c, c), (4 * c, c), (c, 4 * c)]  # (out, in) per block, in order
    total, spare = 0, False

    def normal(n):
        nonlocal total, spare
        k, spare = _normal_draws(n, spare)
        total += k

    def uniform(n):
        nonlocal total
        total += n

    normal(v * c)                      # wte
    normal(t * c)                      # wpe
    for _ in range(n_layer):
        for out, inp in linears:
            uniform(out * inp)
            if bias:
                uniform(out)
    uniform(v * c)                     # lm_head (then tied: wte.weight = lm_head.weight)
    normal(v * c)                      # apply: wte
    normal(t * c)                      # apply: wpe
    for _ in range(n_layer):
        for out, inp in linears:
            normal(out * inp)
    normal(v * c)                      # apply: lm_head, the same matrix again
    for _ in range(n_layer):
        normal(c * c)                  # attn.c_proj.weight
        normal(4 * c * c)              # mlp.c_proj.weight
    return total


# --------------------------------------------------------------------------- replay

def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number, not {value!r}.")
    return int(value)


class NanoGPTReplay:
    """The start offsets nanoGPT's train.py drew at every iteration, micro-step and rank."""

    def __init__(self, *, train_len: int, val_len: int, block_size: int, batch_size: int,
                 grad_accum: int, world_size: int = 1, eval_interval: int = 2000,
                 eval_iters: int = 200, eval_only: bool = False, model_args: dict,
                 init_from: str = "scratch", resumed_at: int = 0, dropout_on_cpu: bool = False,
                 randint_64bit_from: int | None = None):
        self.train_len = _as_int(train_len, "train_len")
        self.val_len = _as_int(val_len, "val_len")
        self.block_size = _as_int(block_size, "block_size")
        self.batch_size = _as_int(batch_size, "batch_size")
        self.grad_accum = _as_int(grad_accum, "grad_accum")
        self.world_size = _as_int(world_size, "world_size")
        self.eval_interval = _as_int(eval_interval, "eval_interval")
        self.eval_iters = _as_int(eval_iters, "eval_iters")
        self.resumed_at = _as_int(resumed_at, "resumed_at")
        self.eval_only = bool(eval_only)
        self.dropout_on_cpu = bool(dropout_on_cpu)
        self.init_from = str(init_from)
        for name in ("block_size", "batch_size", "grad_accum", "world_size", "eval_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}.")
        if self.eval_iters < 0 or self.resumed_at < 0:
            raise ValueError("eval_iters and resumed_at cannot be negative.")
        if self.init_from.startswith("gpt2"):
            raise ValueError(f"Runs started with init_from='{self.init_from}' cannot be replayed: "
                             "the generator draws made while loading OpenAI's weights are unknown.")
        if self.init_from not in ("scratch", "resume"):
            raise ValueError(f"init_from must be 'scratch' or 'resume', not {self.init_from!r}.")
        if self.init_from == "scratch" and self.resumed_at:
            raise ValueError("resumed_at only applies to runs with init_from='resume'.")
        if not isinstance(model_args, dict):
            raise ValueError("model_args must be the checkpoint's model_args dict.")
        if self.train_len < self.block_size + 1:
            raise ValueError(f"The training data has {self.train_len} tokens, fewer than "
                             f"block_size + 1 = {self.block_size + 1}, so nanoGPT could not draw "
                             "a batch from it.")
        if self.eval_iters and self.val_len < self.block_size + 1:
            raise ValueError(f"The validation data has {self.val_len} tokens, fewer than "
                             f"block_size + 1 = {self.block_size + 1}, so nanoGPT could not "
                             "evaluate on it.")
        self.model_args = dict(model_args)
        self.init_draws = model_init_draws(self.model_args)
        self._train_range = self.train_len - self.block_size
        self._val_range = max(self.val_len - self.block_size, 1)
        if randint_64bit_from is None:
            randint_64bit_from = installed_randint_64bit_from()
        if randint_64bit_from not in (1 << 28, 1 << 32):
            raise ValueError("randint_64bit_from must be 2**28 (torch 2.7 and later) or 2**32 "
                             "(torch 2.6 and earlier).")
        self.randint_64bit_from = randint_64bit_from
        self._tw = 2 if self._train_range >= randint_64bit_from else 1  # outputs per offset
        self._vw = 2 if self._val_range >= randint_64bit_from else 1
        self._train_batch = self.batch_size * self._tw
        self._eval_block = self.eval_iters * self.batch_size * (self._tw + self._vw)
        self._cache: dict[int, OrderedDict[int, tuple[np.ndarray, int]]] = {}
        self.notes: list[str] = self._make_notes()

    # ----------------------------------------------------------------- construction helpers

    @classmethod
    def from_checkpoint(cls, ckpt: Any, *, train_len: int, val_len: int, world_size: int = 1,
                        resumed_at: int | None = None,
                        randint_64bit_from: int | None = None) -> "NanoGPTReplay":
        """Build from a nanoGPT checkpoint dict (or a checkpoint.Checkpoint).

        `resumed_at` is needed only when the checkpoint itself was written by a run started
        with init_from='resume': nanoGPT does not record the iteration it resumed at.
        `randint_64bit_from`: see the module docstring (None: the installed torch's).
        """
        if hasattr(ckpt, "model_args") and hasattr(ckpt, "config") and not isinstance(ckpt, dict):
            config, model_args = ckpt.config, ckpt.model_args
        elif isinstance(ckpt, dict):
            config, model_args = ckpt.get("config"), ckpt.get("model_args")
        else:
            raise ValueError("A nanoGPT checkpoint is a dict with 'config' and 'model_args'.")
        if not isinstance(config, dict) or not config:
            raise ValueError("The checkpoint has no 'config' (train.py's settings), so the batches "
                             "it trained on cannot be replayed.")
        if not isinstance(model_args, dict) or not model_args:
            raise ValueError("The checkpoint has no 'model_args', so the model's initialisation "
                             "draws cannot be counted.")
        missing = [k for k in _CONFIG_REQUIRED if k not in config]
        if missing:
            raise ValueError(f"The checkpoint's config lacks {', '.join(missing)}, so the batches "
                             "cannot be replayed.")
        defaulted = [k for k in _CONFIG_DEFAULTS if k not in config]
        cfg = {**_CONFIG_DEFAULTS, **config}
        world_size = _as_int(world_size, "world_size")
        if world_size < 1:
            raise ValueError(f"world_size must be at least 1, not {world_size}.")
        total_accum = _as_int(cfg["gradient_accumulation_steps"], "gradient_accumulation_steps")
        if total_accum % world_size:
            raise ValueError(f"gradient_accumulation_steps ({total_accum}) is not divisible by "
                             f"world_size ({world_size}); nanoGPT refuses such a run.")
        init_from = str(cfg["init_from"])
        if init_from == "resume":
            if resumed_at is None:
                raise ValueError("This checkpoint was written by a run resumed with "
                                 "init_from='resume', and nanoGPT does not record the iteration "
                                 "it resumed at; give that iteration (resumed_at; --resumed-at on the command line).")
        else:
            resumed_at = 0 if resumed_at is None else resumed_at
        dropout = float(model_args.get("dropout", cfg["dropout"]) or 0.0)
        device = str(cfg["device"])
        # DDP moves every rank to cuda:<local_rank>; only a single-process CPU run drops out
        # on the CPU generator.
        dropout_on_cpu = dropout > 0 and world_size == 1 and device.startswith("cpu")
        replay = cls(train_len=train_len, val_len=val_len,
                     block_size=_as_int(cfg["block_size"], "block_size"),
                     batch_size=_as_int(cfg["batch_size"], "batch_size"),
                     grad_accum=total_accum // world_size, world_size=world_size,
                     eval_interval=_as_int(cfg["eval_interval"], "eval_interval"),
                     eval_iters=_as_int(cfg["eval_iters"], "eval_iters"),
                     eval_only=bool(cfg["eval_only"]), model_args=model_args,
                     init_from=init_from, resumed_at=resumed_at, dropout_on_cpu=dropout_on_cpu,
                     randint_64bit_from=randint_64bit_from)
        if world_size > 1:
            replay.notes.insert(0, (
                f"The checkpoint's gradient_accumulation_steps ({total_accum}) is the total over "
                f"all {world_size} ranks; nanoGPT divides it after saving its config, so each "
                f"rank ran {total_accum // world_size} micro-steps per iteration."))
        if defaulted:
            replay.notes.append(f"The checkpoint's config does not give {', '.join(defaulted)}; "
                                "nanoGPT's defaults were assumed.")
        if "max_iters" in cfg:
            replay.notes.append(
                f"The run was set to stop after iteration {cfg['max_iters']} "
                f"({int(cfg['max_iters']) - replay.resumed_at + 1} optimizer steps from iteration "
                f"{replay.resumed_at}); its last micro-step drew one more batch that was never "
                "trained on.")
        return replay

    def _make_notes(self) -> list[str]:
        notes = []
        s, ei = self.resumed_at, self.eval_interval
        if self.init_from == "resume":
            if s % ei == 0:
                notes.append(
                    f"The run resumed at iteration {s} with a freshly seeded generator, so "
                    f"iteration {s} + i trained on the same offsets as iteration i of a run "
                    f"started from scratch, and the evaluation at iteration {s} drew the same "
                    "batches as the one at iteration 0.")
            else:
                notes.append(
                    f"The run resumed at iteration {s} with a freshly seeded generator, so its "
                    "batches restart the sequence of a fresh run (with evaluations at other "
                    "points, since the resume iteration is not a multiple of eval_interval).")
            if self.eval_only:
                notes.append("eval_only only stops nanoGPT at iteration 0, so this resumed run "
                             "trained anyway.")
        elif self.eval_only:
            notes.append("With eval_only, nanoGPT stops after the evaluation at iteration 0 and "
                         "trains on nothing.")
        if self.dropout_on_cpu:
            notes.append(
                "Dropout ran on the CPU, where it draws from the same generator as the batch "
                f"sampler, so only the first batch and the evaluation at iteration {s} can be "
                "replayed exactly (replay is exact with dropout 0 or on a CUDA/MPS device).")
        if self.world_size > 1:
            notes.append(f"Each rank r seeded its generator with {BASE_SEED} + r; only rank 0 "
                         "runs the evaluations, so only its sequence contains evaluation draws.")
        ambiguous = [name for name, r in (("train", self._train_range), ("val", self._val_range))
                     if 1 << 28 <= r < 1 << 32]
        if ambiguous:
            which = "torch 2.7 or later" if self.randint_64bit_from == 1 << 28 \
                else "torch 2.6 or earlier"
            notes.append(
                f"The {' and '.join(ambiguous)} data is between 2**28 and 2**32 tokens long, where "
                "torch 2.7 changed how torch.randint draws (two generator outputs per offset "
                "instead of one); these offsets assume the run used "
                f"{which} (randint_64bit_from={self.randint_64bit_from:#x}).")
        return notes

    # ----------------------------------------------------------------- offsets in the stream

    def _evals_between(self, first: int, last: int) -> int:
        """Rank-0 evaluations at iterations first..last inclusive."""
        if last < first:
            return 0
        if self.eval_only and self.init_from == "scratch":
            return 1 if first <= 0 <= last else 0
        ei = self.eval_interval
        return last // ei - (first - 1) // ei

    def _train_position(self, n: int, rank: int) -> int:
        """Outputs consumed before the n-th training batch (n = 0: the one drawn before the loop)."""
        pos = self.init_draws + n * self._train_batch
        if rank == 0 and n > 0:
            s = self.resumed_at
            # the evaluation at iteration i comes right after training batch (i - s) * K
            pos += self._eval_block * self._evals_between(s, s + (n - 1) // self.grad_accum)
        return pos

    def _check_iteration(self, it: int) -> int:
        it = _as_int(it, "iteration")
        if it < self.resumed_at:
            raise ValueError(f"Iteration {it} comes before the resume at iteration "
                             f"{self.resumed_at}; those batches were drawn by the earlier run.")
        return it

    def _check_trained(self, last_n: int) -> None:
        """Raise unless training batches 0..last_n can be replayed exactly."""
        if self.eval_only and self.init_from == "scratch":
            raise ValueError("This run had eval_only set, so nanoGPT stopped after the first "
                             "evaluation and trained on no batch.")
        if self.dropout_on_cpu and last_n > 0:
            raise ValueError("Dropout ran on the CPU and drew from the batch sampler's generator "
                             "during training, so this batch cannot be replayed exactly.")

    # ----------------------------------------------------------------- reading the generator

    def _raw(self, rank: int, position: int, count: int) -> np.ndarray:
        """`count` raw 32-bit outputs of rank's generator starting after `position` outputs."""
        cache = self._cache.setdefault(rank, OrderedDict())
        best = None
        for p in cache:
            if p <= position and (best is None or p > best):
                best = p
        if best is None:
            key, pos = advance(seed_key(BASE_SEED + rank), _N, position)
        else:
            cache.move_to_end(best)
            key, pos = advance(*cache[best], position - best)
        bg = bitgen(key, pos)
        cache[position] = (key, pos)
        while len(cache) > 64:
            cache.popitem(last=False)
        return bg.random_raw(count).astype(np.uint64)

    @staticmethod
    def _offsets(raw: np.ndarray, width: int, high: int) -> np.ndarray:
        if width == 2:  # random64: the first output is the high half
            raw = (raw[0::2] << np.uint64(32)) | raw[1::2]
        return (raw % np.uint64(high)).astype(np.int64)

    # ----------------------------------------------------------------- public queries

    def train_starts(self, it: int, micro: int, rank: int = 0) -> np.ndarray:
        """(B,) start offsets micro-step `micro` of iteration `it` on `rank` trained on."""
        it = self._check_iteration(it)
        micro, rank = _as_int(micro, "micro"), _as_int(rank, "rank")
        if not 0 <= micro < self.grad_accum:
            raise ValueError(f"micro must be in 0..{self.grad_accum - 1}, not {micro}.")
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank must be in 0..{self.world_size - 1}, not {rank}.")
        n = (it - self.resumed_at) * self.grad_accum + micro
        self._check_trained(n)
        raw = self._raw(rank, self._train_position(n, rank), self._train_batch)
        return self._offsets(raw, self._tw, self._train_range)

    def step_starts(self, it: int) -> np.ndarray:
        """(K, W, B) start offsets of every micro-step and rank of iteration `it`."""
        it = self._check_iteration(it)
        K, W, B = self.grad_accum, self.world_size, self.batch_size
        n0 = (it - self.resumed_at) * K
        self._check_trained(n0 + K - 1)
        out = np.empty((K, W, B), dtype=np.int64)
        for rank in range(W):
            first = self._train_position(n0, rank)
            last = self._train_position(n0 + K - 1, rank)
            raw = self._raw(rank, first, last - first + self._train_batch)
            for m in range(K):
                at = self._train_position(n0 + m, rank) - first
                out[m, rank] = self._offsets(raw[at:at + self._train_batch], self._tw,
                                             self._train_range)
        return out

    def eval_starts(self, it: int, split: str) -> np.ndarray | None:
        """(eval_iters, B) offsets estimate_loss drew on rank 0 at iteration `it`, else None."""
        it = _as_int(it, "iteration")
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}.")
        s = self.resumed_at
        if it < s or it % self.eval_interval or self._evals_between(it, it) == 0 \
                or self.eval_iters == 0:
            return None
        if self.dropout_on_cpu and it != s:
            raise ValueError("Dropout ran on the CPU and drew from the batch sampler's generator, "
                             "so this evaluation cannot be replayed exactly.")
        # the evaluation follows training batch n (micro-step 0 of `it`, drawn at the end of
        # the previous iteration); _train_position already counts the evaluations before it
        n = (it - s) * self.grad_accum
        pos = self._train_position(n, 0) + self._train_batch
        if split == "train":
            raw = self._raw(0, pos, self.eval_iters * self._train_batch)
            offs = self._offsets(raw, self._tw, self._train_range)
        else:
            pos += self.eval_iters * self._train_batch
            raw = self._raw(0, pos, self.eval_iters * self.batch_size * self._vw)
            offs = self._offsets(raw, self._vw, self._val_range)
        return offs.reshape(self.eval_iters, self.batch_size)


def replay_from_files(ckpt_path: str | os.PathLike, *, train_bin: str | os.PathLike,
                      val_bin: str | os.PathLike, world_size: int = 1,
                      resumed_at: int | None = None,
                      randint_64bit_from: int | None = None) -> NanoGPTReplay:
    """NanoGPTReplay for a checkpoint file (or nanoGPT out_dir) and its uint16 .bin files.

    The checkpoint is opened with the project's weights-only loader.
    """
    from nanogpt_viz.engine.checkpoint import load_checkpoint  # raises CheckpointError (a ValueError)

    ckpt = load_checkpoint(ckpt_path)
    lengths = []
    for path in (train_bin, val_bin):
        try:
            lengths.append(os.path.getsize(path) // 2)  # np.memmap(dtype=uint16) length
        except OSError as e:
            raise ValueError(f"Cannot read the data file {path}: {e.strerror}.") from None
    return NanoGPTReplay.from_checkpoint(ckpt, train_len=lengths[0], val_len=lengths[1],
                                         world_size=world_size, resumed_at=resumed_at,
                                         randint_64bit_from=randint_64bit_from)


class RunDraws:
    """A nanoGPT run's batches for `BatchPlan(..., draws=)`, iteration by iteration.

    A run resumed at iteration R (init_from='resume') draws afresh from R on; iterations before R
    were drawn by the run that wrote the checkpoint it resumed from, taken here to be a run from
    scratch with the same settings (nanoGPT records nothing else).
    """

    def __init__(self, replay: NanoGPTReplay):
        self.replay = replay
        self.before: NanoGPTReplay | None = None
        self.notes = list(replay.notes)
        if replay.init_from == "resume" and replay.resumed_at > 0:
            r = replay
            self.before = NanoGPTReplay(
                train_len=r.train_len, val_len=r.val_len, block_size=r.block_size, batch_size=r.batch_size,
                grad_accum=r.grad_accum, world_size=r.world_size, eval_interval=r.eval_interval,
                eval_iters=r.eval_iters, eval_only=False, model_args=r.model_args, init_from="scratch",
                randint_64bit_from=r.randint_64bit_from)
            self.notes.append(f"Iterations before {r.resumed_at} are shown as the run from scratch that wrote "
                              f"the checkpoint it resumed from, with the same settings, would have drawn them.")

    def _for(self, it: int) -> NanoGPTReplay:
        if self.before is not None and it < self.replay.resumed_at:
            return self.before
        return self.replay

    def train_starts(self, it: int, micro: int, rank: int = 0) -> np.ndarray:
        return self._for(it).train_starts(it, micro, rank)

    def eval_starts(self, it: int, split: str) -> np.ndarray | None:
        return self._for(it).eval_starts(it, split)


def plan_settings(ckpt: Any, world_size: int = 1) -> dict[str, int]:
    """N, B and K per rank of the nanoGPT run that wrote `ckpt` (a dict or checkpoint.Checkpoint)."""
    config = ckpt.config if hasattr(ckpt, "config") and not isinstance(ckpt, dict) else ckpt.get("config")
    if not isinstance(config, dict) or any(k not in config for k in _CONFIG_REQUIRED):
        raise ValueError("The checkpoint's config lacks block_size, batch_size or gradient_accumulation_steps, "
                         "so it is not a nanoGPT train.py checkpoint whose batches can be replayed.")
    total = _as_int(config["gradient_accumulation_steps"], "gradient_accumulation_steps")
    if total % world_size:
        raise ValueError(f"gradient_accumulation_steps ({total}) is not divisible by world_size ({world_size}); "
                         f"nanoGPT refuses such a run.")
    return {"block_size": _as_int(config["block_size"], "block_size"),
            "batch_size": _as_int(config["batch_size"], "batch_size"), "grad_accum": total // world_size}
