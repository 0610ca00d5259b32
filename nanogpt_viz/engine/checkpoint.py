"""Checkpoints that nanoGPT can read and that are safe to open.

The file is a `torch.save`d dict with nanoGPT's own keys

    model          state dict (no `_orig_mod.` / `module.` prefixes)
    optimizer      optimizer.state_dict() or None
    model_args     exactly GPTConfig's 7 fields
    iter_num       int
    best_val_loss  float
    config         plain values only (str/int/float/bool/None/list/dict)

so nanoGPT's `sample.py` and `train.py --init_from=resume` open it as is.
What nanogpt-viz needs on top for an exact resume (plan, train settings, RNG
states, format version) lives under one extra key, "nanogpt_viz", which nanoGPT
ignores.

Safety: we only ever load with `weights_only=True`, so a file can hold tensors
and plain containers but can never make us run code. Saving checks for the same
restriction up front, so we never write a file we would later refuse.
"""
from __future__ import annotations

import errno
import os
import pickle
import re
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from nanogpt_viz.atomic import atomic_path
from nanogpt_viz.config import ModelConfig

FORMAT_VERSION = 1
EXTRA_KEY = "nanogpt_viz"
MODEL_ARGS_FIELDS = tuple(f.name for f in fields(ModelConfig))  # GPTConfig's 7 fields
# prefixes torch.compile (`_orig_mod.`) and DDP (`module.`) put on state-dict keys
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message is a full sentence for the user."""


class NonFiniteWeights(CheckpointError):
    """save_checkpoint refuses weights holding NaN or inf: such a file could only mislead."""


@dataclass
class Checkpoint:
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict | None
    model_args: dict[str, Any]  # exactly MODEL_ARGS_FIELDS
    iter_num: int
    best_val_loss: float
    config: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # {} for nanoGPT's own checkpoints
    path: Path | None = None

    @property
    def format_version(self) -> int | None:
        """nanogpt-viz format version; None for a checkpoint written by nanoGPT itself."""
        return self.extra.get("format_version")

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.model_args)


# --------------------------------------------------------------------------- validation

_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any, where: str, *, allow_tensors: bool) -> Any:
    """Copy `value` into types weights-only unpickling accepts, or raise TypeError.

    numpy scalars become Python numbers and numpy arrays become tensors (when
    tensors are allowed), because the weights-only loader rejects numpy objects.
    Tuples stay tuples where tensors are allowed (optimizer betas, RNG states)
    and become lists in `config`, which is meant to be JSON-like.
    """
    if type(value) in _SCALARS:
        return value
    if isinstance(value, torch.Tensor):
        if not allow_tensors:
            raise TypeError(f"{where} is a tensor; config must hold plain values only "
                            "(str, int, float, bool, None, list, dict).")
        return value.detach()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if np is not None:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            if not allow_tensors:
                raise TypeError(f"{where} is a numpy array; config must hold plain values only.")
            return torch.from_numpy(value.copy())
    # subclasses (IntEnum, str-Enum, ...) would be pickled by class name: store the plain value
    for plain_type in (bool, int, float, str):
        if isinstance(value, plain_type):
            return plain_type(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}; "
                                "only str and int keys can be stored.")
            out[k] = _plain(v, f"{where}[{k!r}]", allow_tensors=allow_tensors)
        return out
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]", allow_tensors=allow_tensors) for i, v in enumerate(value)]
        return tuple(items) if (allow_tensors and isinstance(value, tuple)) else items
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which a "
                    "weights-only checkpoint cannot hold; convert it to plain values "
                    "(str, int, float, bool, None, list, dict or tensor) first.")


def _normalise_model_args(model_args: Any) -> dict[str, Any]:
    if isinstance(model_args, ModelConfig):
        model_args = model_args.to_dict()
    if not isinstance(model_args, dict):
        raise TypeError(f"model_args must be a dict or ModelConfig, not {type(model_args).__name__}.")
    missing = [k for k in MODEL_ARGS_FIELDS if k not in model_args]
    unknown = [k for k in model_args if k not in MODEL_ARGS_FIELDS]
    if missing or unknown:
        raise ValueError("model_args must hold exactly nanoGPT's GPTConfig fields "
                         f"({', '.join(MODEL_ARGS_FIELDS)}); missing: {missing or 'none'}, "
                         f"unknown: {unknown or 'none'}.")
    out = _plain(dict(model_args), "model_args", allow_tensors=False)
    # fixed key order and exact Python types, as nanoGPT's train.py writes them
    return {
        "n_layer": int(out["n_layer"]), "n_head": int(out["n_head"]), "n_embd": int(out["n_embd"]),
        "block_size": int(out["block_size"]), "bias": bool(out["bias"]),
        "vocab_size": int(out["vocab_size"]), "dropout": float(out["dropout"]),
    }


def strip_wrapper_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    """Drop `_orig_mod.` (torch.compile) and `module.` (DDP) from the front of every key."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if k.startswith(prefix):
                    k = k[len(prefix):]
                    changed = True
        out[k] = v
    return out


# --------------------------------------------------------------------------- save

def save_checkpoint(path: str | os.PathLike, *, model_state: dict, optimizer_state: dict | None,
                    model_args: dict | ModelConfig, iter_num: int, best_val_loss: float,
                    config: dict, extra: dict | None = None) -> Path:
    """Write a checkpoint atomically; returns its resolved path.

    Everything is checked before anything touches the disk (TypeError for a
    value weights-only loading would reject, ValueError for bad model_args).
    The file is written to a temporary sibling, fsynced and renamed over
    `path`, so a crash or exception mid-write leaves any previous checkpoint
    intact.
    """
    path = Path(path)
    if not isinstance(model_state, dict) or not all(isinstance(v, torch.Tensor) for v in model_state.values()):
        raise TypeError("model_state must be a dict of tensors (model.state_dict()).")
    bad = nonfinite_tensors(model_state)
    if bad:
        raise NonFiniteWeights(f"refusing to write {path}: {len(bad)} of {len(model_state)} weight tensors hold NaN "
                               f"or inf (e.g. {bad[0]}); the file on disk, if any, is left as it was.")
    payload = {
        # Tensors are saved as they are (any device); load_checkpoint maps them to the CPU.
        "model": {k: v.detach() for k, v in strip_wrapper_prefixes(model_state).items()},
        "optimizer": None if optimizer_state is None else _plain(optimizer_state, "optimizer_state",
                                                                 allow_tensors=True),
        "model_args": _normalise_model_args(model_args),
        "iter_num": _as_int(iter_num, "iter_num"),
        "best_val_loss": _as_float(best_val_loss, "best_val_loss"),
        "config": _plain(dict(config), "config", allow_tensors=False),
        EXTRA_KEY: {**_plain(dict(extra or {}), "extra", allow_tensors=True),
                    "format_version": FORMAT_VERSION},
    }

    # atomic_path: a hidden sibling .ckpt.pt.PID-XXXX.tmp, fsynced, renamed over `path`; the pid in the
    # name tells remove_stale_temps which partial files no live process is still writing
    try:
        with atomic_path(path) as tmp_name:
            with open(tmp_name, "wb") as f:
                torch.save(payload, f)
    except BaseException as exc:
        if isinstance(exc, (RuntimeError, OSError)) and not isinstance(exc, (FileNotFoundError, PermissionError)):
            # torch's zip writer reports a failed write as "[enforce fail at inline_container.cc] ... file write
            # failed": say what it was (a full disk, judged by the free space against the file's size)
            need = payload_bytes(payload)
            try:
                st = os.statvfs(path.parent)
                full = st.f_bavail * st.f_frsize < need
            except (OSError, AttributeError):
                full = False
            if full or getattr(exc, "errno", None) == errno.ENOSPC:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path.parent)) from None
            if isinstance(exc, OSError):
                raise
            raise OSError(errno.EIO, f"writing {path} failed ({str(exc).strip().splitlines()[0][:200]})",
                          str(path.parent)) from None
        raise
    return path.resolve()


def payload_bytes(obj: Any) -> int:
    """The bytes of every tensor in a nested checkpoint payload (about the file's size)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_bytes(v) for v in obj)
    return 0


def nonfinite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors of a state dict holding NaN or inf."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


_TEMP_RE = re.compile(r"^\.ckpt\.pt\.(?:(\d+)-)?[^/]*\.tmp$")


def remove_stale_temps(directory: str | os.PathLike) -> list[tuple[str, int]]:
    """Remove the partial `.ckpt.pt.*.tmp` files an interrupted save left in `directory`; [(name, bytes)].

    A file whose name carries the pid of a live process other than this one is left alone (that process
    may be writing it); older names without a pid are stale by definition once a new run starts.
    """
    out: list[tuple[str, int]] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return out
    for e in entries:
        m = _TEMP_RE.match(e.name)
        if m is None or not e.is_file(follow_symlinks=False):
            continue
        pid = int(m.group(1)) if m.group(1) else None
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        try:
            size = e.stat(follow_symlinks=False).st_size
            os.unlink(e.path)
        except OSError:
            continue
        out.append((e.name, size))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def describe_mismatch(saved: dict, expected: dict) -> str:
    """'' when the saved weights fit the model's state dict, else one sentence naming what differs."""
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [(k, tuple(saved[k].shape), tuple(v.shape)) for k, v in expected.items()
              if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    parts = []

    def some(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    if shapes:
        k, got, want = shapes[0]
        parts.append(f"{k} has shape {got} where the model needs {want}"
                     + (f" ({len(shapes) - 1} more tensors differ in shape)" if len(shapes) > 1 else ""))
    if missing:
        parts.append(f"{len(missing)} weight(s) missing ({some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} weight(s) the model does not have ({some(unexpected)})")
    return "; ".join(parts)


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    value = _plain(value, name, allow_tensors=False)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}.")
    return value


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()  # nanoGPT stores best_val_loss as a 0-d tensor
    value = _plain(value, name, allow_tensors=False)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}.")
    return float(value)


# --------------------------------------------------------------------------- load

def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Read a checkpoint written by nanogpt-viz or by nanoGPT; weights-only, never runs code.

    `path` may also be a directory holding `ckpt.pt` (nanoGPT's out_dir).
    Raises CheckpointError with a user-facing sentence on any problem.
    """
    path = Path(path)
    if path.is_dir() and (path / "ckpt.pt").is_file():
        path = path / "ckpt.pt"
    if not path.exists():
        raise CheckpointError(f"There is no checkpoint file at {path}.")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file, so it cannot be a checkpoint.")

    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "WeightsUnpickler" in msg:
            reason = _weights_only_reason(msg)
            raise CheckpointError(
                f"The checkpoint {path} was refused: it needs arbitrary code to load (weights-only "
                f"loading rejected it{': ' + reason if reason else ''}). nanogpt-viz only opens "
                "files made of tensors and plain values, and nothing in this one was run.") from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint, or it is damaged ({msg.strip()[:200]}).") from None
    except Exception as e:  # zip errors, truncated files, random bytes, ...
        text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        detail = f"{type(e).__name__}: {text}" if text else type(e).__name__
        raise CheckpointError(f"{path} is not a PyTorch checkpoint, or it is damaged or truncated "
                              f"({detail}).") from None

    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a nanoGPT checkpoint dict.")
    missing = [k for k in ("model", "model_args", "iter_num", "best_val_loss") if k not in raw]
    if missing:
        raise CheckpointError(f"{path} is not a nanoGPT checkpoint: it lacks the key(s) "
                              f"{', '.join(missing)}.")

    model_args = raw["model_args"]
    if not isinstance(model_args, dict):
        raise CheckpointError(f"The checkpoint {path} has model_args of type "
                              f"{type(model_args).__name__}; a dict was expected.")
    missing = [k for k in MODEL_ARGS_FIELDS if k not in model_args]
    if missing:
        raise CheckpointError(f"The checkpoint {path} does not say how to build the model: its "
                              f"model_args lack {', '.join(missing)}.")
    try:
        # unknown extra keys (a fork's additions) are dropped: GPTConfig has exactly these 7
        model_args = _normalise_model_args({k: model_args[k] for k in MODEL_ARGS_FIELDS})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"The checkpoint {path} has unusable model_args: {e}") from None
    problems = ModelConfig(**model_args).problems()
    if problems:
        raise CheckpointError(f"The checkpoint {path} describes an impossible model: "
                              f"{'; '.join(problems)}.")

    state = raw["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"The checkpoint {path} has no model weights (its 'model' entry is "
                              "not a dict of tensors).")
    state = strip_wrapper_prefixes(state)
    # nanoGPT on torch < 2.0 saved its causal-mask buffer as `...attn.bias`; it is not a weight
    state = {k: v for k, v in state.items() if not k.endswith(".attn.bias")}

    optimizer = raw.get("optimizer")
    if optimizer is not None and not isinstance(optimizer, dict):
        raise CheckpointError(f"The checkpoint {path} has an optimizer entry of type "
                              f"{type(optimizer).__name__}; a state dict was expected.")
    config = raw.get("config") or {}
    if not isinstance(config, dict):
        raise CheckpointError(f"The checkpoint {path} has a config of type {type(config).__name__}; "
                              "a dict was expected.")
    extra = raw.get(EXTRA_KEY) or {}
    if not isinstance(extra, dict):
        raise CheckpointError(f"The checkpoint {path} has a malformed '{EXTRA_KEY}' entry.")
    version = extra.get("format_version")
    if version is not None and (not isinstance(version, int) or version > FORMAT_VERSION):
        raise CheckpointError(f"The checkpoint {path} was written by a newer nanogpt-viz (format "
                              f"{version}; this version reads up to {FORMAT_VERSION}). Please upgrade.")

    try:
        iter_num = _as_int(raw["iter_num"], "iter_num")
        best_val_loss = _as_float(raw["best_val_loss"], "best_val_loss")
    except TypeError as e:
        raise CheckpointError(f"The checkpoint {path} is malformed: {e}") from None

    return Checkpoint(model_state=state, optimizer_state=optimizer, model_args=model_args,
                      iter_num=iter_num, best_val_loss=best_val_loss, config=config,
                      extra=extra, path=path.resolve())


def _weights_only_reason(msg: str) -> str:
    """The one useful line of torch's long weights-only error ('Unsupported global: ...')."""
    for line in msg.splitlines():
        line = line.strip()
        if line.startswith("WeightsUnpickler error:"):
            rest = line[len("WeightsUnpickler error:"):].strip()
            if rest:
                return rest.split(" was not an allowed global")[0].rstrip(".")
    for line in msg.splitlines():
        if line.strip().startswith("Unsupported"):
            return line.strip().rstrip(".")
    return ""


def model_from_checkpoint(ckpt: Checkpoint | str | os.PathLike):
    """Build GPT(ModelConfig(**model_args)) and load the weights strictly (CPU, train mode).

    Accepts a Checkpoint or a path. Move it with .to(device); call .eval() to sample.
    """
    from nanogpt_viz.engine.model import GPT  # keep `import checkpoint` cheap for callers that only inspect files

    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    model = GPT(ModelConfig(**ckpt.model_args))
    where = f" {ckpt.path}" if ckpt.path else ""
    problem = describe_mismatch(ckpt.model_state, model.state_dict())
    if problem:
        raise CheckpointError(f"The checkpoint{where} does not fit the model its model_args describe: {problem}.")
    bad = nonfinite_tensors(ckpt.model_state)
    if bad:
        raise CheckpointError(f"The checkpoint{where} holds non-finite weights ({len(bad)} of "
                              f"{len(ckpt.model_state)} tensors hold NaN or inf, e.g. {bad[0]}); it cannot be used.")
    try:
        model.load_state_dict(ckpt.model_state, strict=True)
    except RuntimeError as e:
        where = f" {ckpt.path}" if ckpt.path else ""
        first = str(e).strip().splitlines()
        raise CheckpointError(f"The checkpoint{where} does not fit the model its model_args describe "
                              f"({' '.join(x.strip() for x in first[:3])[:400]}).") from None
    return model


# --------------------------------------------------------------------------- RNG state

def capture_rng_state() -> dict[str, Any]:
    """RNG states in a weights-only-safe form (for `extra`): torch CPU/CUDA, Python, numpy."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),  # uint8 tensor
        "python": _plain(random.getstate(), "python", allow_tensors=True),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    try:
        import numpy as np
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"kind": str(kind), "keys": torch.from_numpy(keys.astype("int64")),
                          "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}
    except ImportError:  # pragma: no cover
        pass
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of capture_rng_state; missing parts are left alone."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu().to(torch.uint8) for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        import numpy as np
        s = state["numpy"]
        np.random.set_state((s["kind"], s["keys"].numpy().astype(np.uint32), s["pos"],
                             s["has_gauss"], s["cached"]))


__all__ = [
    "FORMAT_VERSION", "EXTRA_KEY", "MODEL_ARGS_FIELDS", "CheckpointError", "Checkpoint",
    "save_checkpoint", "load_checkpoint", "model_from_checkpoint", "strip_wrapper_prefixes", "NonFiniteWeights",
    "remove_stale_temps", "describe_mismatch", "nonfinite_tensors", "payload_bytes",
    "capture_rng_state", "restore_rng_state",
]
