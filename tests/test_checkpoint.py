"""Checkpoints: nanoGPT-compatible, weights-only safe, atomic."""
import pathlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from nanogpt_viz.engine import checkpoint as ck
from nanogpt_viz.engine.checkpoint import (CheckpointError, capture_rng_state, load_checkpoint,
                                    model_from_checkpoint, restore_rng_state, save_checkpoint)
from nanogpt_viz.config import ModelConfig
from nanogpt_viz.engine.model import GPT

TINY = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=128, dropout=0.0, bias=True)


def _trained(cfg=TINY):
    """A model and AdamW after one step, so the optimizer has state."""
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    x = torch.randint(0, cfg.vocab_size, (2, cfg.block_size))
    _, loss, _ = model(x, x)
    loss.backward()
    opt.step()
    return model, opt


def _save(path, model, opt, **kw):
    args = dict(model_state=model.state_dict(), optimizer_state=opt.state_dict(),
                model_args=model.config.to_dict(), iter_num=7, best_val_loss=2.5,
                config={"learning_rate": 1e-3, "dataset": "shakespeare", "betas": (0.9, 0.95)},
                extra={"rng": {"torch": torch.get_rng_state()}, "plan": {"block_size": 16}})
    args.update(kw)
    return save_checkpoint(path, **args)


def test_round_trip(tmp_path):
    model, opt = _trained()
    rng = torch.get_rng_state()
    path = _save(tmp_path / "sub" / "ckpt.pt", model, opt)  # creates the parent dir
    assert path.is_file()
    c = load_checkpoint(path)
    assert c.iter_num == 7 and c.best_val_loss == 2.5
    assert list(c.model_args) == ["n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size",
                                  "dropout"]
    assert ModelConfig(**c.model_args) == TINY
    assert c.config == {"learning_rate": 1e-3, "dataset": "shakespeare", "betas": [0.9, 0.95]}
    assert torch.equal(c.extra["rng"]["torch"], rng) and c.extra["rng"]["torch"].dtype == torch.uint8
    assert c.extra["plan"] == {"block_size": 16} and c.format_version == ck.FORMAT_VERSION
    sd = model.state_dict()
    assert c.model_state.keys() == sd.keys()
    assert all(torch.equal(c.model_state[k], sd[k]) for k in sd)

    m2 = model_from_checkpoint(c)
    assert m2.transformer.wte.weight is m2.lm_head.weight  # tying survives loading
    x = torch.randint(0, 128, (2, 16))
    model.eval(), m2.eval()
    assert torch.equal(model(x)[0], m2(x)[0])
    opt2 = m2.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    opt2.load_state_dict(c.optimizer_state)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_file_is_plain_nanogpt_checkpoint(tmp_path):
    """What nanoGPT's sample.py and train.py --init_from=resume do, on torch >= 2.6."""
    model, opt = _trained()
    path = _save(tmp_path / "ckpt.pt", model, opt)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "model_args", "iter_num", "best_val_loss", "config"} <= checkpoint.keys()

    @dataclass
    class GPTConfig:  # nanoGPT's, field for field
        block_size: int = 1024
        vocab_size: int = 50304
        n_layer: int = 12
        n_head: int = 12
        n_embd: int = 768
        dropout: float = 0.0
        bias: bool = True

    # sample.py
    gptconf = GPTConfig(**checkpoint["model_args"])
    m = GPT(gptconf)
    state_dict = checkpoint["model"]
    unwanted_prefix = "_orig_mod."
    for k, v in list(state_dict.items()):
        if k.startswith(unwanted_prefix):
            state_dict[k[len(unwanted_prefix):]] = state_dict.pop(k)
    m.load_state_dict(state_dict)

    # train.py resume
    model_args = dict(n_layer=1, n_head=1, n_embd=1, block_size=1, bias=False, vocab_size=None, dropout=0.0)
    for k in ["n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size"]:
        model_args[k] = checkpoint["model_args"][k]
    assert GPTConfig(**model_args) == GPTConfig(**TINY.to_dict())
    m.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu").load_state_dict(checkpoint["optimizer"])
    assert checkpoint["iter_num"] == 7 and checkpoint["best_val_loss"] == 2.5


def test_nanogpt_written_checkpoint_loads(tmp_path):
    """A file laid out as nanoGPT's train.py writes it: compiled keys, tensor best_val_loss, no extra key."""
    model, opt = _trained(TINY.with_(bias=False))
    nanogpt_file = {
        "model": {"_orig_mod." + k: v for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "model_args": dict(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=False, vocab_size=128,
                           dropout=0.0),
        "iter_num": 2000,
        "best_val_loss": torch.tensor(1.4697),
        "config": {"out_dir": "out-shakespeare-char", "compile": True, "beta2": 0.99},
    }
    torch.save(nanogpt_file, tmp_path / "ckpt.pt")
    c = load_checkpoint(tmp_path)  # a directory with ckpt.pt also works
    assert c.extra == {} and c.format_version is None
    assert c.iter_num == 2000 and c.best_val_loss == pytest.approx(1.4697)
    assert not any(k.startswith("_orig_mod.") for k in c.model_state)
    m2 = model_from_checkpoint(c)
    assert torch.equal(m2.lm_head.weight, model.lm_head.weight)


def test_ddp_and_compile_prefixes_stripped(tmp_path):
    model, opt = _trained()
    prefixed = {"module._orig_mod." + k: v for k, v in model.state_dict().items()}
    path = _save(tmp_path / "c.pt", model, opt, model_state=prefixed)
    raw = torch.load(path, weights_only=True)
    assert set(raw["model"]) == set(model.state_dict())
    model_from_checkpoint(load_checkpoint(path))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_hostile_pickle_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    model, opt = _trained()
    payload = {"model": model.state_dict(), "optimizer": None, "model_args": TINY.to_dict(),
               "iter_num": 0, "best_val_loss": 1.0, "config": {"x": _Evil(marker)}}
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused: it needs arbitrary code to load"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_atomic_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    model, opt = _trained()
    path = _save(tmp_path / "ckpt.pt", model, opt, iter_num=1)
    real_save = torch.save

    def failing_save(obj, f, *a, **kw):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _save(path, model, opt, iter_num=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path).iter_num == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temp files left


def test_non_plain_values_rejected_before_writing(tmp_path):
    model, opt = _trained()
    with pytest.raises(TypeError, match=r"config\['when'\]"):
        _save(tmp_path / "a.pt", model, opt, config={"when": object()})
    with pytest.raises(TypeError, match="tensor"):
        _save(tmp_path / "a.pt", model, opt, config={"t": torch.zeros(1)})
    with pytest.raises(TypeError, match=r"extra\['s'\]"):
        _save(tmp_path / "a.pt", model, opt, extra={"s": {1, 2}})
    with pytest.raises(ValueError, match="unknown"):
        _save(tmp_path / "a.pt", model, opt, model_args={**TINY.to_dict(), "flash": True})
    assert not (tmp_path / "a.pt").exists()


def test_numpy_values_are_converted(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path / "n.pt", model, opt, iter_num=np.int64(3), best_val_loss=np.float32(1.5),
                 config={"lr": np.float64(0.1), "n": np.int32(4)},
                 extra={"arr": np.arange(4, dtype=np.int64)})
    raw = torch.load(path, weights_only=True)
    assert type(raw["config"]["lr"]) is float and type(raw["config"]["n"]) is int
    assert type(raw["iter_num"]) is int and isinstance(raw["nanogpt_viz"]["arr"], torch.Tensor)


def test_rng_state_round_trip(tmp_path):
    model, opt = _trained()
    torch.manual_seed(5), np.random.seed(5)
    import random
    random.seed(5)
    path = _save(tmp_path / "r.pt", model, opt, extra={"rng": capture_rng_state()})
    expect = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(load_checkpoint(path).extra["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1]) and expect[2] == got[2]


@pytest.mark.parametrize("content,match", [
    (None, "no checkpoint file"),
    (b"", "not a PyTorch checkpoint"),
    (b"PK\x03\x04 not really a zip", "not a PyTorch checkpoint"),
    (b"hello, world", "not a PyTorch checkpoint"),
])
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_missing_keys_and_model_args(tmp_path):
    model, _ = _trained()
    torch.save({"model": model.state_dict()}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="model_args"):
        load_checkpoint(tmp_path / "a.pt")
    args = TINY.to_dict()
    del args["n_head"]
    torch.save({"model": model.state_dict(), "model_args": args, "iter_num": 0, "best_val_loss": 1.0},
               tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="n_head"):
        load_checkpoint(tmp_path / "b.pt")
    torch.save([1, 2, 3], tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="list"):
        load_checkpoint(tmp_path / "c.pt")


def test_state_not_matching_model_args(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path / "m.pt", model, opt, model_args=TINY.with_(n_layer=3).to_dict())
    with pytest.raises(CheckpointError, match="does not fit"):
        model_from_checkpoint(path)
