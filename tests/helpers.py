"""Shared by the tests: twin models computing two ways; a checkpoint as nanoGPT's train.py writes one."""
import torch

from nanogpt_viz.engine.model import GPT


def twin_runs(config, options, idx, targets, autocast: bool, **forward_kw):
    """One forward + backward of a GPT and of a copy with the same weights built with GPT(config, **options).

    Returns [(loss, per_token, {name: grad}, logits), ...] for the original, then the copy; bf16 autocast
    on the CPU when autocast is true.
    """
    torch.manual_seed(0)
    first = GPT(config)
    second = GPT(config, **options)
    second.load_state_dict(first.state_dict())
    out = []
    for m in (first, second):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
        with ctx:
            res = m(idx, targets, **forward_kw)
        res.loss.backward()
        out.append((res.loss.detach(), res.per_token.detach(), {n: p.grad for n, p in m.named_parameters()},
                    res.logits))
    return out


def write_nanogpt_checkpoint(path, model_config, *, iter_num: int, config: dict, optimizer: str = "cpu") -> None:
    """A checkpoint with the structure nanoGPT's train.py saves: its 6 keys, AdamW in two groups (weights with
    dim >= 2 decayed, the rest not), `best_val_loss` a 0-d tensor, `config` its settings.

    optimizer: "cpu" as nanoGPT on a CPU leaves it (unfused AdamW: `fused: None` in the param groups),
    "gpu" as on CUDA (`fused: True`), "old-torch" as a torch from before AdamW carried
    `decoupled_weight_decay` (no such key; torch would read it as plain Adam).
    """
    torch.manual_seed(0)
    model = GPT(model_config)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95))
    idx = torch.randint(0, model_config.vocab_size, (2, model_config.block_size))
    for _ in range(2):  # a state with moments
        _, loss, _ = model(idx, idx)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    state = opt.state_dict()
    for g in state["param_groups"]:
        if optimizer == "gpu":
            g["fused"] = True
        elif optimizer == "old-torch":
            del g["decoupled_weight_decay"]
    torch.save({"model": model.state_dict(), "optimizer": state, "model_args": model_config.to_dict(),
                "iter_num": iter_num, "best_val_loss": torch.tensor(9.5), "config": dict(config)}, path)


def set_plan(win, **changes):
    """Change the window's plan as a user would: the plan panel shows it and the session takes it."""
    pc = win.session.plan_config.with_(**changes)
    win.plan_panel.set_config(pc)
    win.session.set_plan_config(pc)
    return pc


def tiny_cpu_training(win, steps: int, eval_interval: int = 0):
    """The train panel set for a quick test run: the tiny model on the CPU, float32, not compiled. Returns it."""
    tp = win.train_panel
    tp.preset.setCurrentText("tiny")
    tp.steps.setValue(steps)
    tp.eval_interval.setValue(eval_interval)
    tp.device.setCurrentIndex(tp.device.findData("cpu"))
    tp.dtype.setCurrentText("float32")
    tp.compile.setCurrentText("off")
    return tp
