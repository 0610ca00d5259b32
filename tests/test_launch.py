"""The torchrun command the window shows reproduces the window's settings exactly."""
from nanogpt_viz.cli import build_parser
from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig
from nanogpt_viz.run.launch import parse_hosts, shell_line, torchrun_command, train_args

import pytest


def test_train_args_parse_back_to_the_same_settings(tmp_path):
    pc = PlanConfig(block_size=128, batch_size=6, grad_accum=3, sampling="sliding", stride=7, seed=11)
    mc = MODEL_PRESETS["small"].with_(n_layer=3, dropout=0.1)
    tc = TrainConfig(steps=77, learning_rate=3e-4, min_lr=3e-5, warmup_steps=5, eval_interval=9, device="cuda",
                     dtype="bfloat16", compile=False, lr_decay_steps=70, residual_dtype="bfloat16")
    args = build_parser().parse_args(train_args("data/", pc, "small", mc, tc, tmp_path / "run"))
    assert (args.block_size, args.batch_size, args.grad_accum, args.sampling, args.stride, args.seed) == \
        (128, 6, 3, "sliding", 7, 11)
    assert (args.preset, args.n_layer, args.dropout, args.n_head) == ("small", 3, 0.1, None)
    assert (args.steps, args.lr, args.min_lr, args.warmup_steps, args.eval_interval, args.lr_decay_steps) == \
        (77, 3e-4, 3e-5, 5, 9, 70)
    assert (args.device, args.dtype, args.compile, args.out, args.json) == ("cuda", "bfloat16", False,
                                                                           str(tmp_path / "run"), True)
    assert args.residual_dtype == "bfloat16"
    assert build_parser().parse_args(train_args("d/", pc, "small", mc, tc.with_(residual_dtype="float32"),
                                                tmp_path)).residual_dtype == "float32"


def test_single_node_and_multi_node_commands():
    one = torchrun_command(["train", "x"], nproc=4, python="python3")
    assert one[:5] == ["python3", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert one[-4:] == ["-m", "nanogpt_viz", "train", "x"]
    hosts = parse_hosts("gpu-a, gpu-b gpu-c")
    two = torchrun_command(["train", "x"], nproc=8, hosts=hosts, node_rank=2, python="python3")
    assert "--nnodes=3" in two and "--node_rank=2" in two and "--rdzv_endpoint=gpu-a:29500" in two
    assert "'a b'" in shell_line(["train", "a b"])
    with pytest.raises(ValueError):
        parse_hosts("ok; rm -rf /")


def test_every_train_setting_has_a_flag_and_round_trips(tmp_path):
    """TRAIN_FLAGS covers every TrainConfig field (or says why it has no flag), and each one's value, set away from
    its default, comes back from the CLI's parser: the window's torchrun command cannot drop a setting."""
    from dataclasses import fields

    from nanogpt_viz.cli import build_parser
    from nanogpt_viz.run.launch import TRAIN_FIELDS_WITHOUT_FLAG, TRAIN_FLAGS

    names = {f.name for f in fields(TrainConfig)}
    covered = {name for name, _ in TRAIN_FLAGS}
    assert names == covered | set(TRAIN_FIELDS_WITHOUT_FLAG), names ^ (covered | set(TRAIN_FIELDS_WITHOUT_FLAG))
    assert not covered & set(TRAIN_FIELDS_WITHOUT_FLAG)
    odd = dict(steps=123, learning_rate=2.5e-4, min_lr=2.5e-5, warmup_steps=7, lr_decay_steps=111, weight_decay=0.03,
               grad_clip=0.5, eval_interval=13, eval_batches=9, eval_protocol="whole", device="cpu", dtype="bfloat16",
               compile=False, per_token=False, checkpoint_interval=17, residual_dtype="bfloat16", divide_by_k=False)
    assert set(odd) == covered
    tc = TrainConfig(**odd)
    for f in fields(TrainConfig):
        if f.name in odd:
            assert getattr(tc, f.name) != f.default, f.name  # each value differs from the default
    parser = build_parser()
    argv = train_args("data/", PlanConfig(), "tiny", MODEL_PRESETS["tiny"], tc, tmp_path / "run")
    args = parser.parse_args(argv)
    cli_name = {"learning_rate": "lr"}
    for name in covered:
        assert getattr(args, cli_name.get(name, name)) == getattr(tc, name), name
