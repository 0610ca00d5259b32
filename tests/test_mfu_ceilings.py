"""MFU against both ceilings: the measured matmul rate (mfu) and the vendor's datasheet (mfu_datasheet)."""
import numpy as np
import pytest
import torch

from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig
from nanogpt_viz.engine.trainer import StepReport, Trainer, peak_flops_for

TINY = MODEL_PRESETS["tiny"].with_(vocab_size=512, n_embd=32, block_size=32)


@pytest.mark.parametrize("name, measured, datasheet", [
    ("NVIDIA H200", 790e12, 989e12), ("NVIDIA H100 80GB HBM3", 790e12, 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12, 312e12), ("NVIDIA GeForce RTX 4090", None, None)])
def test_both_ceilings_by_device_name(name, measured, datasheet):
    assert peak_flops_for("cuda", name) == measured
    assert peak_flops_for("cuda", name, datasheet=True) == datasheet
    assert peak_flops_for("cpu", name) is None and peak_flops_for("cpu", name, datasheet=True) is None


def _reports(device):
    toks = np.random.default_rng(0).integers(0, 512, 20_000).astype(np.uint16)
    tc = TrainConfig(steps=2, eval_interval=0, device=device, compile=False)
    return [e for e in Trainer(toks, None, PlanConfig(block_size=16, batch_size=4), TINY, tc).run()
            if isinstance(e, StepReport)]


def test_cpu_reports_neither():
    assert all(r.mfu is None and r.mfu_datasheet is None for r in _reports("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_reports_both_with_the_ceilings_ratio():
    name = torch.cuda.get_device_name(0)
    measured, datasheet = peak_flops_for("cuda", name), peak_flops_for("cuda", name, datasheet=True)
    if measured is None:
        pytest.skip(f"no ceiling known for {name}")
    for r in _reports("cuda"):
        assert r.mfu_datasheet == pytest.approx(r.mfu * measured / datasheet)
        assert r.peak_flops == measured and r.datasheet_peak_flops == datasheet
