"""GPT matches nanoGPT's definition and trains; all on CPU with tiny configs."""
import math

import pytest
import torch

from nanogpt_viz.config import MODEL_PRESETS, ModelConfig
from nanogpt_viz.engine.model import GPT, GPTOutput, build_model, estimate_mfu, flops_per_token

TINY = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=128, dropout=0.0, bias=True)


def _nanogpt_keys(n_layer: int, n_embd: int, vocab: int, block: int, bias: bool) -> dict[str, tuple]:
    """nanoGPT's state_dict keys and shapes, written out by hand from its model.py."""
    C = n_embd
    keys = {
        "transformer.wte.weight": (vocab, C),
        "transformer.wpe.weight": (block, C),
        "transformer.ln_f.weight": (C,),
        "lm_head.weight": (vocab, C),
    }
    if bias:
        keys["transformer.ln_f.bias"] = (C,)
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        keys.update({
            p + "ln_1.weight": (C,),
            p + "attn.c_attn.weight": (3 * C, C),
            p + "attn.c_proj.weight": (C, C),
            p + "ln_2.weight": (C,),
            p + "mlp.c_fc.weight": (4 * C, C),
            p + "mlp.c_proj.weight": (C, 4 * C),
        })
        if bias:
            keys.update({
                p + "ln_1.bias": (C,),
                p + "attn.c_attn.bias": (3 * C,),
                p + "attn.c_proj.bias": (C,),
                p + "ln_2.bias": (C,),
                p + "mlp.c_fc.bias": (4 * C,),
                p + "mlp.c_proj.bias": (C,),
            })
    return keys


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_keys_and_shapes_match_nanogpt(bias):
    model = GPT(TINY.with_(bias=bias))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == _nanogpt_keys(2, 32, 128, 16, bias)
    assert not any(k.endswith(".attn.bias") for k in got)  # no causal-mask buffer


def test_weight_tying_shares_storage():
    model = GPT(TINY)
    assert model.transformer.wte.weight is model.lm_head.weight
    sd = model.state_dict()
    assert sd["transformer.wte.weight"].data_ptr() == sd["lm_head.weight"].data_ptr()
    # the tied matrix counts once
    n_all = sum(p.numel() for p in model.parameters())
    assert model.get_num_params(non_embedding=False) == n_all
    assert model.get_num_params() == n_all - 16 * 32


def test_init_statistics():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=32, vocab_size=512)
    model = GPT(cfg)
    std_proj = model.transformer.h[0].mlp.c_proj.weight.std().item()
    std_fc = model.transformer.h[0].mlp.c_fc.weight.std().item()
    assert abs(std_fc - 0.02) < 0.002
    assert abs(std_proj - 0.02 / math.sqrt(2 * 4)) < 0.001
    assert torch.all(model.transformer.h[0].attn.c_attn.bias == 0)


def test_forward_shapes_and_per_token():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(0, 128, (3, 16))
    targets = torch.randint(0, 128, (3, 16))
    logits, loss, per_token = model(idx)
    assert logits.shape == (3, 1, 128) and loss is None and per_token is None
    logits, loss, per_token = model(idx, targets)
    assert logits.shape == (3, 16, 128)
    assert per_token.shape == (3, 16) and per_token.dtype == torch.float32
    assert loss.shape == () and torch.allclose(per_token.mean(), loss)
    # at init the loss is about ln(V)
    assert abs(loss.item() - math.log(128)) < 0.3
    _, loss_sum, _ = model(idx, targets, reduction="sum")
    assert torch.allclose(loss_sum, per_token.sum())
    # the inference logits are the last position of the full logits
    assert torch.allclose(model(idx)[0][:, 0], logits[:, -1], atol=1e-5)


def test_ignore_index():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(0, 128, (2, 8))
    targets = torch.randint(0, 128, (2, 8))
    targets[:, :3] = -1
    _, loss, per_token = model(idx, targets)
    assert torch.all(per_token[:, :3] == 0)
    assert torch.allclose(loss, per_token[:, 3:].mean())


def test_too_long_sequence_raises_value_error():
    model = GPT(TINY)
    with pytest.raises(ValueError, match="block size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_bf16_autocast_per_token_is_float32():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(0, 128, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss, per_token = model(idx, idx)
    assert logits.dtype == torch.bfloat16
    assert per_token.dtype == torch.float32 and loss.dtype == torch.float32


def test_overfits_one_batch():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=32, bias=False)
    model = GPT(cfg)
    x = torch.randint(0, 32, (4, 16))
    y = torch.randint(0, 32, (4, 16))
    opt = model.configure_optimizers(weight_decay=0.0, learning_rate=1e-2, betas=(0.9, 0.95),
                                     device_type="cpu")
    first = None
    for _ in range(200):
        _, loss, _ = model(x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert first > 3.0
    assert loss.item() < 0.5


def test_gradient_accumulation_matches_big_batch():
    torch.manual_seed(0)
    model = GPT(TINY)  # dropout 0
    x = torch.randint(0, 128, (8, 16))
    y = torch.randint(0, 128, (8, 16))

    model.zero_grad()
    _, loss, _ = model(x, y)
    loss.backward()
    big = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    K = 4
    for k in range(K):
        _, loss, _ = model(x[2 * k:2 * k + 2], y[2 * k:2 * k + 2])
        (loss / K).backward()  # equal-sized micro-batches: mean of means == mean
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, big[n], atol=1e-6, rtol=1e-4), n


def _nanogpt_groups(model, weight_decay):
    """nanoGPT's configure_optimizers grouping, as its model.py writes it (by name, requires_grad only)."""
    param_dict = {pn: p for pn, p in model.named_parameters()}
    param_dict = {pn: p for pn, p in param_dict.items() if p.requires_grad}
    decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
    nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
    return [{"params": decay_params, "weight_decay": weight_decay}, {"params": nodecay_params, "weight_decay": 0.0}]


@pytest.mark.parametrize("bias", [True, False])
def test_configure_optimizers_groups_are_nanogpts(bias):
    """The one optimizer builder: nanoGPT's two groups (decay on dim >= 2, in its order), lr and betas; fused
    where torch has the kernel for the device (the trainer's found_inf needs it)."""
    model = GPT(TINY.with_(bias=bias))
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    ref = _nanogpt_groups(model, 0.1)
    assert len(opt.param_groups) == 2
    for ours, theirs in zip(opt.param_groups, ref):
        assert [id(p) for p in ours["params"]] == [id(p) for p in theirs["params"]]
        assert ours["weight_decay"] == theirs["weight_decay"]
        assert ours["lr"] == 1e-3 and ours["betas"] == (0.9, 0.95)
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == model.get_num_params(non_embedding=False)
    from nanogpt_viz.engine.model import fused_adamw_available

    assert bool(opt.defaults.get("fused")) == fused_adamw_available("cpu")
    assert isinstance(opt, torch.optim.AdamW)


def test_trainer_uses_the_one_optimizer_builder():
    """No second AdamW in the engine: the trainer's optimizer is GPT.configure_optimizers's."""
    import inspect

    from nanogpt_viz.engine import trainer

    src = inspect.getsource(trainer)
    assert "torch.optim.AdamW(" not in src and "configure_optimizers(" in src


def test_generate_length_and_context_crop():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    out = model.generate(torch.zeros(2, 3, dtype=torch.long), max_new_tokens=20, top_k=5)
    assert out.shape == (2, 23)  # ran past block_size 16: the context was cropped
    assert out.max() < 128
    greedy1 = model.generate(torch.zeros(1, 1, dtype=torch.long), 5, temperature=0)
    greedy2 = model.generate(torch.zeros(1, 1, dtype=torch.long), 5, temperature=0)
    assert torch.equal(greedy1, greedy2)


def test_crop_block_size():
    model = GPT(TINY)
    model.crop_block_size(8)
    assert model.config.block_size == 8
    assert model.transformer.wpe.weight.shape == (8, 32)
    model(torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_mfu_and_flops():
    cfg = MODEL_PRESETS["gpt2"]
    # nanoGPT's README: GPT-2 124M has 85M non-embedding params... here N counts wte
    n = 124_000_000
    fpt = flops_per_token(cfg, n)
    assert fpt == 6 * n + 12 * 12 * 12 * 64 * 1024
    model = GPT(TINY)
    fpt = flops_per_token(TINY, model.get_num_params())
    # 8 full-length rows (16 tokens each) in 0.5 s against a 1 TFLOP/s ceiling
    assert estimate_mfu(fpt, 8 * 16, 0.5, 1e12) == pytest.approx(fpt * 16 * 8 / 0.5 / 1e12)
    assert not hasattr(GPT, "estimate_mfu")  # one MFU formula: model.estimate_mfu, used by trainer and benchmarks


def test_build_model_presets_and_overrides():
    m = build_model("tiny", vocab_size=128)
    assert m.config == MODEL_PRESETS["tiny"].with_(vocab_size=128)
    assert build_model(TINY).config == TINY
    assert build_model(TINY.to_dict(), n_layer=1).config.n_layer == 1
    with pytest.raises(ValueError, match="preset"):
        build_model("nope")
    with pytest.raises(ValueError):
        build_model("tiny", n_head=3)  # 64 % 3 != 0
    with pytest.raises(ValueError):
        build_model("tiny", colour="red")


def test_forward_always_returns_one_shape():
    """GPTOutput(logits, loss, per_token) with and without targets; None marks what was not computed."""
    torch.manual_seed(0)
    idx = torch.randint(0, 128, (2, 16))
    for options in ({}, {"fused_loss": True, "gelu": "kept"}):
        model = GPT(TINY, **options)
        for out, have in ((model(idx), (True, False, False)), (model(idx, idx), (True, True, True)),
                          (model(idx, idx, return_logits=False), (False, True, True)),
                          (model(idx, idx, reduction="sum"), (True, True, True))):
            assert isinstance(out, GPTOutput) and len(out) == 3
            assert tuple(v is not None for v in out) == have
        assert model(idx).logits.shape == (2, 1, 128)
        out = model(idx, idx, return_logits=False)
        assert out.loss.shape == () and out.per_token.shape == (2, 16)


def test_engine_options_are_constructor_arguments_and_keep_nanogpts_state_dict():
    torch.manual_seed(0)
    plain = GPT(TINY)
    fast = GPT(TINY, fused_loss=True, gelu="kept", residual_dtype="bfloat16")
    assert fast.options == {"fused_loss": True, "gelu": "kept", "residual_dtype": torch.bfloat16}
    assert plain.options == {"fused_loss": False, "gelu": "torch", "residual_dtype": None}
    assert GPT(TINY, residual_dtype=torch.bfloat16).residual_dtype == torch.bfloat16
    assert all(b.mlp.keep_gelu for b in fast.transformer.h)
    # the same names and shapes: a fast-path model's weights load into a plain one (and into nanoGPT's)
    assert {k: v.shape for k, v in fast.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(fast.state_dict())
    with pytest.raises(ValueError, match="gelu"):
        GPT(TINY, gelu="tanh")
    with pytest.raises(ValueError, match="residual_dtype"):
        GPT(TINY, residual_dtype="int8")
    assert not hasattr(GPT, "set_kernels")
    assert build_model(TINY, options={"gelu": "kept"}).gelu == "kept"


def test_no_environment_switches_in_the_engine():
    """Engine options come from constructor arguments and TrainConfig, never from environment variables."""
    from pathlib import Path

    import nanogpt_viz.engine as engine

    root = Path(engine.__file__).parent
    for path in sorted(root.rglob("*.py")):
        src = path.read_text()
        assert "NANOGPT_VIZ_" not in src, path
        for line in src.splitlines():
            if "os.environ" in line or "os.getenv" in line:
                # the one allowed use: torchrun's RANK / LOCAL_RANK / WORLD_SIZE (DistInfo.from_env)
                assert any(k in line for k in ("RANK", "WORLD_SIZE")), f"{path.name}: {line.strip()}"
