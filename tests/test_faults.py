"""Issue 14's matrix: every bad input or fault, the exact message the user sees, and proof nothing was lost.

Each case runs the real command line in this process (`cli.main`, through argparse and the engine; one
process keeps the whole file fast) and checks

* the exit status and the exact `error:` line (paths written as {run}, {data}, ...),
* no traceback,
* the files it must not touch: their hashes before and after, and every checkpoint there still loads
  with finite weights.

The model is the tiny preset on a 256-id vocabulary (a nanoGPT folder whose meta.pkl says so), so a
checkpoint is a few hundred kB and a run of two steps takes a fraction of a second.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nanogpt_viz import cli
from nanogpt_viz.data import corpus as corpus_mod
from nanogpt_viz.data.corpus import write_llmc_shard, write_nanogpt_bin
from nanogpt_viz.engine.checkpoint import load_checkpoint

V = 256  # the corpora's vocabulary (meta.pkl) and the models'
MODEL = ["--vocab-size", str(V), "--device", "cpu", "--eval-interval", "0"]
BASE = ["-N", "16", "-B", "2", *MODEL]


# ------------------------------------------------------------------------------------------------ helpers


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stderr, stdout) of `nanogpt-viz ARGV`, in this process."""
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out = capsys.readouterr()
    return code, out.err, out.out


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    return lines[0]


def hashes(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in paths:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_checkpoint_good(path: Path, steps: int | None = None) -> None:
    ck = load_checkpoint(path)
    assert all(torch.isfinite(v).all() for v in ck.model_state.values() if v.is_floating_point())
    if steps is not None:
        assert ck.iter_num == steps


def nanogpt_dir(d: Path, train: np.ndarray, val: np.ndarray) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    write_nanogpt_bin(d / "train.bin", train)
    write_nanogpt_bin(d / "val.bin", val)
    with open(d / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": V}, f)
    return d


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Shared, read-only: a corpus, a 2-step run directory, and bad files of every kind."""
    root = tmp_path_factory.mktemp("faults")
    os.environ["NANOGPT_VIZ_CACHE"] = str(root / "cache")
    rng = np.random.default_rng(0)
    data = nanogpt_dir(root / "data", rng.integers(0, V, 4000), rng.integers(0, V, 600))
    run = root / "run"
    assert cli.main(["train", str(data), *BASE, "--steps", "2", "--out", str(run)]) == 0
    assert_checkpoint_good(run / "ckpt.pt", 2)
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "odd.bin").write_bytes(b"\x01\x00\x02")
    write_llmc_shard(bad / "shard.bin", rng.integers(0, V, 100))
    (bad / "truncated_shard.bin").write_bytes((bad / "shard.bin").read_bytes()[:-10])
    np.save(bad / "two_d.npy", np.zeros((4, 4), dtype=np.uint16))
    np.save(bad / "floats.npy", np.zeros(16, dtype=np.float32))
    (bad / "named.npy").write_bytes(b"this is not numpy at all, just text\n" * 4)
    (bad / "utf16.txt").write_bytes("hello world, UTF-16 text\n".encode("utf-16") * 20)
    (bad / "nul.dat").write_bytes(b"\x00\x01\x02\x03" * 64)
    (bad / "emptydir").mkdir()
    os.mkfifo(bad / "fifo")
    os.symlink(bad / "loop_b", bad / "loop_a")
    os.symlink(bad / "loop_a", bad / "loop_b")
    os.symlink(bad / "nowhere", bad / "dangling")
    latin = ("Café crème, naïve façade, señor, Ærø. " * 300).encode("latin-1")
    (bad / "latin1.txt").write_bytes(latin)
    (bad / "random.txt").write_bytes(bytes(b for b in rng.integers(1, 256, 20000, dtype=np.uint8)))
    mostly = ("plain UTF-8 text, line after line. " * 400).encode() + b"\xff\xfe"
    (bad / "mostly_utf8.txt").write_bytes(mostly)
    ck = bad / "ckpts"
    ck.mkdir()
    (ck / "random.pt").write_bytes(rng.bytes(5000))
    (ck / "truncated.pt").write_bytes((run / "ckpt.pt").read_bytes()[:3000])
    (ck / "notdict.pt").write_bytes(b"")
    torch.save([1, 2, 3], ck / "list.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(root / "pwned"),))

    torch.save({"model": Evil()}, ck / "evil.pt")
    return {"root": root, "data": data, "run": run, "bad": bad, "ck": ck}


@pytest.fixture
def paths(world, tmp_path):
    """Per case: a private copy of the run directory ({run}) and a fresh output path ({new})."""
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    return {"data": str(world["data"]), "run": str(run), "new": str(tmp_path / "new"), "bad": str(world["bad"]),
            "ck": str(world["ck"]), "tmp": str(tmp_path)}


def fmt(items, p):
    return [str(a).format(**p) for a in items]


# ------------------------------------------------------------------------------------------------ the matrix
# (id, argv, exit status, the exact error line). Every case also proves that {run} (a 2-step run
# directory with its checkpoint) is byte for byte as it was and still loads with finite weights.

T = ["train", "{data}", *BASE, "--steps", "3"]
R = ["train", "{data}", *MODEL, "--steps", "4", "--out", "{run}", "--resume"]
P = ["plan", "{data}", "-N", "16", "-B", "2"]
S = ["sample", "{run}", "--tokens", "3"]

CASES = [
    # item 1: the recipe is checked at parse time (non-finite, negative)
    ("lr-inf", [*R, "--lr", "inf"], 2, "error: argument --lr: lr must be a finite number (got 'inf')"),
    ("lr-nan", [*R, "--lr", "nan"], 2, "error: argument --lr: lr must be a finite number (got 'nan')"),
    ("lr-negative", [*R, "--lr", "-1"], 2, "error: argument --lr: lr must be > 0 (got '-1')"),
    ("lr-zero", [*R, "--lr", "0"], 2, "error: argument --lr: lr must be > 0 (got '0')"),
    ("lr-text", [*R, "--lr", "fast"], 2, "error: argument --lr: lr must be a number (got 'fast')"),
    ("min-lr-nan", [*R, "--min-lr", "nan"], 2, "error: argument --min-lr: min lr must be a finite number (got 'nan')"),
    ("min-lr-negative", [*R, "--min-lr", "-0.1"], 2, "error: argument --min-lr: min lr must be >= 0 (got '-0.1')"),
    ("wd-nan", [*R, "--weight-decay", "nan"], 2,
     "error: argument --weight-decay: weight decay must be a finite number (got 'nan')"),
    ("wd-inf", [*R, "--weight-decay", "inf"], 2,
     "error: argument --weight-decay: weight decay must be a finite number (got 'inf')"),
    ("wd-negative", [*R, "--weight-decay", "-1"], 2,
     "error: argument --weight-decay: weight decay must be >= 0 (got '-1')"),
    ("clip-nan", [*R, "--grad-clip", "nan"], 2,
     "error: argument --grad-clip: grad clip must be a finite number (got 'nan')"),
    ("clip-inf", [*R, "--grad-clip", "inf"], 2,
     "error: argument --grad-clip: grad clip must be a finite number (got 'inf')"),
    ("clip-negative", [*R, "--grad-clip", "-2"], 2, "error: argument --grad-clip: grad clip must be >= 0 (got '-2')"),
    # item 8: one seed range everywhere
    ("seed-huge-train", [*R, "--seed", str(10**30)], 2,
     f"error: argument --seed: seed must be in 0..4294967295 (got {10**30})"),
    ("seed-huge-plan", [*P, "--seed", str(10**30)], 2,
     f"error: argument --seed: seed must be in 0..4294967295 (got {10**30})"),
    ("seed-2^32-plan", [*P, "--seed", str(2**32)], 2,
     "error: argument --seed: seed must be in 0..4294967295 (got 4294967296)"),
    ("seed-negative-plan", [*P, "--seed", "-1"], 2, "error: argument --seed: seed must be in 0..4294967295 (got -1)"),
    ("seed-huge-sample", [*S, "--seed", str(2**40)], 2,
     "error: argument --seed: seed must be in 0..4294967295 (got 1099511627776)"),
    # item 6: sample's temperature
    ("temperature-nan", [*S, "--temperature", "nan"], 2,
     "error: argument --temperature: temperature must be a finite number (got 'nan')"),
    ("temperature-inf", [*S, "--temperature", "inf"], 2,
     "error: argument --temperature: temperature must be a finite number (got 'inf')"),
    ("temperature-zero", [*S, "--temperature", "0"], 2,
     "error: argument --temperature: temperature must be > 0 (got '0')"),
    ("temperature-negative", [*S, "--temperature", "-1"], 2,
     "error: argument --temperature: temperature must be > 0 (got '-1')"),
    ("top-k-zero", [*S, "--top-k", "0"], 2, "error: argument --top-k: top k must be >= 1 (got 0)"),
    # other numbers
    ("steps-zero", [*R[:-5], "--steps", "0", "--out", "{run}", "--resume"], 2,
     "error: argument --steps: steps must be >= 1 (got 0)"),
    ("N-zero", [*P[:2], "-N", "0", "-B", "2"], 2, "error: argument --block-size/-N: block size N must be >= 1 (got 0)"),
    ("val-fraction-nan", [*P, "--val-fraction", "nan"], 2,
     "error: argument --val-fraction: must be in [0, 1) (got nan)"),
    ("dropout-one", [*T, "--dropout", "1", "--out", "{new}"], 2, "error: argument --dropout: must be in [0, 1) (got 1.0)"),
    # item 7: a resumed run keeps its model and plan
    ("resume-preset-conflict", [*R, "--preset", "small"], 2,
     "error: --preset small conflicts with the checkpoint's model (tiny: n_layer=2, n_head=2, n_embd=64) in "
     "{run}/ckpt.pt; a resumed run keeps its model: leave --preset out (or train a new run in another --out directory)"),
    ("resume-N-conflict", [*R, "-N", "32"], 2,
     "error: -N 32 differs from the checkpoint's block_size=16 in {run}/ckpt.pt; a resumed run reads the batches "
     "its plan reads next: leave -N out"),
    ("resume-B-conflict", [*R, "-B", "4"], 2,
     "error: -B 4 differs from the checkpoint's batch_size=2 in {run}/ckpt.pt; a resumed run reads the batches its "
     "plan reads next: leave -B out"),
    ("resume-sampling-conflict", [*R, "--sampling", "random"], 2,
     "error: --sampling random differs from the checkpoint's sampling=sequential in {run}/ckpt.pt; a resumed run "
     "reads the batches its plan reads next: leave --sampling out"),
    ("resume-n-layer-conflict", [*R, "--n-layer", "3"], 2,
     "error: --n-layer 3 differs from the checkpoint's n_layer=2 in {run}/ckpt.pt; a resumed run keeps its model: "
     "leave --n-layer out"),
    ("resume-nothing-there", [*R[:-3], "--out", "{new}", "--resume"], 2,
     "error: cannot resume: {new}/ckpt.pt does not exist"),
    # item 9: paths named for what they are
    ("fifo", ["plan", "{bad}/fifo", "-N", "4", "-B", "1"], 2,
     "error: {bad}/fifo is a named pipe (FIFO), not a regular file; a corpus must be a file or a folder of files."),
    ("dev-zero", ["plan", "/dev/zero", "-N", "4", "-B", "1"], 2,
     "error: /dev/zero is a character device, not a regular file; a corpus must be a file or a folder of files."),
    ("proc-file", ["plan", "/proc/self/status", "-N", "4", "-B", "1"], 2,
     "error: /proc/self/status is a virtual file (its size reads 0 but it has content, as files under /proc and "
     "/sys do), not a corpus; copy it into a regular file first."),
    ("symlink-loop", ["plan", "{bad}/loop_a", "-N", "4", "-B", "1"], 2,
     "error: {bad}/loop_a is a symlink loop (following its links leads back to itself); point at the file itself."),
    ("symlink-dangling", ["plan", "{bad}/dangling", "-N", "4", "-B", "1"], 2,
     "error: {bad}/dangling is a symlink to {bad}/nowhere, which does not exist."),
    ("missing", ["plan", "{bad}/missing.bin", "-N", "4", "-B", "1"], 2,
     "error: There is no file or folder at {bad}/missing.bin."),
    ("empty-file", ["plan", "{bad}/empty.txt", "-N", "4", "-B", "1"], 2, "error: {bad}/empty.txt is empty."),
    ("fifo-train", [*T[:1], "{bad}/fifo", *T[2:], "--out", "{new}"], 2,
     "error: {bad}/fifo is a named pipe (FIFO), not a regular file; a corpus must be a file or a folder of files."),
    ("loop-prepare", ["prepare", "{bad}/loop_a", "-o", "{new}"], 2,
     "error: {bad}/loop_a is a symlink loop (following its links leads back to itself); point at the file itself."),
    # corrupt and foreign data files
    ("odd-bin", ["plan", "{bad}/odd.bin", "-N", "4", "-B", "1"], 2,
     "error: {bad}/odd.bin has 3 bytes, which is not a whole number of uint16 tokens (a nanoGPT .bin is raw "
     "uint16 token ids with no header)."),
    ("truncated-llmc", ["plan", "{bad}/truncated_shard.bin", "-N", "4", "-B", "1"], 2,
     "error: {bad}/truncated_shard.bin is an llm.c shard whose header says 100 tokens (1224 bytes) but the file "
     "has 1214 bytes; it is truncated or corrupt."),
    ("npy-2d", ["plan", "{bad}/two_d.npy", "-N", "4", "-B", "1"], 2,
     "error: {bad}/two_d.npy holds a 2-D array of shape (4, 4); token shards must be 1-D."),
    ("npy-floats", ["plan", "{bad}/floats.npy", "-N", "4", "-B", "1"], 2,
     "error: {bad}/floats.npy holds float32 values; token shards must be uint16, int32 or uint32."),
    ("npy-not-numpy", ["plan", "{bad}/named.npy", "-N", "4", "-B", "1"], 2,
     "error: {bad}/named.npy is named .npy but is not a NumPy array file."),
    ("utf16", ["plan", "{bad}/utf16.txt", "-N", "4", "-B", "1"], 2,
     "error: {bad}/utf16.txt looks like UTF-16 text; save it as UTF-8. " + corpus_mod._ACCEPTED),
    ("binary", ["plan", "{bad}/nul.dat", "-N", "4", "-B", "1"], 2,
     "error: {bad}/nul.dat is a binary file in no format this app reads (a text file cannot contain NUL bytes). "
     + corpus_mod._ACCEPTED),
    ("empty-dir", ["plan", "{bad}/emptydir", "-N", "4", "-B", "1"], 2,
     "error: {bad}/emptydir contains no token files. " + corpus_mod._ACCEPTED),
    # item 11: text that is not UTF-8
    ("latin1", ["plan", "{bad}/latin1.txt", "-N", "4", "-B", "1"], 2,
     "error: {bad}/latin1.txt: 2,100 of 11,400 bytes (18.4%) are not UTF-8, so this is probably not UTF-8 text "
     "(Latin-1? UTF-16? binary data?); convert it to UTF-8, or accept the replaced bytes (--accept-undecodable)"),
    ("random-bytes", ["prepare", "{bad}/random.txt", "-o", "{new}"], 2, None),  # "... (NN.N%) are not UTF-8 ..."
    # items 5 and 6: checkpoints that cannot be used
    ("sample-random-bytes", ["sample", "{ck}/random.pt"], 2, None),
    ("sample-truncated", ["sample", "{ck}/truncated.pt"], 2, None),
    ("sample-empty", ["sample", "{ck}/notdict.pt"], 2, None),
    ("sample-list", ["sample", "{ck}/list.pt"], 2, "error: {ck}/list.pt holds a list, not a nanoGPT checkpoint dict."),
    ("sample-code", ["sample", "{ck}/evil.pt"], 2, None),
    ("sample-missing", ["sample", "{tmp}/nothing"], 2,
     "error: {tmp}/nothing: no checkpoint there (train first, or point at a run directory)"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, world, paths, capsys):
    name, argv, code, expected = case
    keep = hashes(Path(paths["run"]), world["data"])
    got, err, _ = run_cli(capsys, *fmt(argv, paths))
    assert "Traceback" not in err
    assert got == code, err
    line = error_line(err)
    if expected is not None:
        assert line == expected.format(**paths)
    assert hashes(Path(paths["run"]), world["data"]) == keep
    assert_checkpoint_good(Path(paths["run"]) / "ckpt.pt", 2)
    assert not (world["root"] / "pwned").exists()
    if "{new}" in " ".join(argv) and name != "resume-nothing-there":
        assert not (Path(paths["new"]) / "ckpt.pt").exists()


# ------------------------------------------------------------------------------------------------ cases with a setup


def mangle(run: Path, change) -> None:
    """Rewrite run/ckpt.pt after change(raw dict) (weights-only readable)."""
    raw = torch.load(run / "ckpt.pt", weights_only=True)
    change(raw)
    torch.save(raw, run / "ckpt.pt")


def _shape(raw):
    raw["model"]["transformer.wte.weight"] = torch.zeros(V, 32)


def _missing(raw):
    del raw["model"]["transformer.h.1.mlp.c_proj.weight"]


def _extra(raw):
    raw["model"]["transformer.h.9.attn.c_attn.weight"] = torch.zeros(3, 3)


def _nan(raw):
    for v in raw["model"].values():
        v.fill_(float("nan"))


def _args(raw):
    raw["model_args"]["n_embd"] = 128


CKPT_CASES = [
    ("resume-shape-mismatch", _shape, "resume",
     "error: the checkpoint {run}/ckpt.pt does not fit the model its model_args describe: transformer.wte.weight has "
     "shape (256, 32) where the model needs (256, 64)"),
    ("resume-missing-weight", _missing, "resume",
     "error: the checkpoint {run}/ckpt.pt does not fit the model its model_args describe: 1 weight(s) missing "
     "(transformer.h.1.mlp.c_proj.weight)"),
    ("resume-unknown-weight", _extra, "resume",
     "error: the checkpoint {run}/ckpt.pt does not fit the model its model_args describe: 1 weight(s) the model "
     "does not have (transformer.h.9.attn.c_attn.weight)"),
    ("resume-model-args-mismatch", _args, "resume", None),
    ("resume-nonfinite", _nan, "resume",
     "error: the checkpoint {run}/ckpt.pt holds non-finite weights (16 of 16 tensors, e.g. transformer.wte.weight); "
     "it cannot be trained from"),
    ("sample-nonfinite", _nan, "sample",
     "error: The checkpoint {run}/ckpt.pt holds non-finite weights (16 of 16 tensors hold NaN or inf, e.g. "
     "transformer.wte.weight); it cannot be used."),
    ("sample-shape-mismatch", _shape, "sample",
     "error: The checkpoint {run}/ckpt.pt does not fit the model its model_args describe: transformer.wte.weight "
     "has shape (256, 32) where the model needs (256, 64)."),
    ("resume-truncated", lambda raw: None, "truncate", None),
]


@pytest.mark.parametrize("case", CKPT_CASES, ids=[c[0] for c in CKPT_CASES])
def test_bad_checkpoint(case, paths, capsys):
    name, change, how, expected = case
    run = Path(paths["run"])
    if how == "truncate":
        (run / "ckpt.pt").write_bytes((run / "ckpt.pt").read_bytes()[:5000])
    else:
        mangle(run, change)
    keep = hashes(run / "ckpt.pt")
    argv = fmt(R if how in ("resume", "truncate") else S, paths)
    code, err, _ = run_cli(capsys, *argv)
    assert "Traceback" not in err
    assert code == 2, err
    line = error_line(err)
    if expected is not None:
        assert line == expected.format(**paths)
    elif how == "truncate":
        assert line.startswith(f"error: {run}/ckpt.pt is not a PyTorch checkpoint, or it is damaged or truncated")
    else:
        assert "does not fit the model its model_args describe" in line
    assert hashes(run / "ckpt.pt") == keep  # the file the user has is left alone


# ------------------------------------------------------------------------------------------------ item 1 at run time


def test_nonfinite_update_fresh_run_writes_no_checkpoint(paths, capsys):
    code, err, _ = run_cli(capsys, *fmt([*T, "--lr", "1e30", "--weight-decay", "1e30", "--warmup-steps", "0",
                                         "--out", "{new}"], paths))
    assert code == 1
    assert re.fullmatch(
        r"error: the update of step 0 made the weights non-finite \(loss \d+\.\d{4} and gradient norm [\d.e+-]+ were "
        r"finite; lr 1e\+30, weight decay 1e\+30\): those weights were not saved\. Lower the learning rate or the "
        r"weight decay; no checkpoint was written", error_line(err))
    assert not (Path(paths["new"]) / "ckpt.pt").exists()


def test_nonfinite_update_on_resume_keeps_the_checkpoint(paths, capsys):
    run = Path(paths["run"])
    keep = hashes(run / "ckpt.pt")
    code, err, _ = run_cli(capsys, *fmt([*R, "--lr", "1e30", "--weight-decay", "1e30"], paths))
    assert code == 1
    line = error_line(err)
    assert line.startswith("error: the update of step 2 made the weights non-finite")
    assert line.endswith(f"; {run}/ckpt.pt still holds the weights after 2 steps")
    assert hashes(run / "ckpt.pt") == keep
    assert_checkpoint_good(run / "ckpt.pt", 2)


def test_save_checkpoint_refuses_nonfinite_weights(paths):
    from nanogpt_viz.engine.checkpoint import NonFiniteWeights, save_checkpoint

    run = Path(paths["run"])
    ck = load_checkpoint(run / "ckpt.pt")
    keep = hashes(run / "ckpt.pt")
    state = {k: v.clone() for k, v in ck.model_state.items()}
    state["lm_head.weight"] = state["lm_head.weight"].clone()
    state["lm_head.weight"][0, 0] = float("inf")
    with pytest.raises(NonFiniteWeights, match=r"refusing to write .*: 1 of \d+ weight tensors hold NaN or inf"):
        save_checkpoint(run / "ckpt.pt", model_state=state, optimizer_state=None, model_args=ck.model_args,
                        iter_num=3, best_val_loss=1.0, config={})
    assert hashes(run / "ckpt.pt") == keep


def test_trainconfig_problems_name_every_bad_number():
    from nanogpt_viz.config import PlanConfig, TrainConfig

    nan, inf = float("nan"), float("inf")
    probs = TrainConfig(learning_rate=nan, min_lr=inf, weight_decay=-1.0, grad_clip=nan, seed=2**40).problems()
    assert probs == ["learning rate must be a finite number (got nan)", "min lr must be a finite number (got inf)",
                     "grad clip must be a finite number (got nan)", "weight decay must be >= 0",
                     "seed must be a whole number in 0..4294967295 (got 1099511627776)"]
    assert PlanConfig(seed=2**32).problems() == ["seed must be a whole number in 0..4294967295 (got 4294967296)"]


# ------------------------------------------------------------------------------------------------ item 2: disk full


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MB tmpfs (root only), unmounted after the test."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    size = "2M"
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.decode(errors='replace').strip()})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_is_a_failure_that_says_where_and_how_much(paths, small_fs, capsys):
    from nanogpt_viz.run.record import read_status

    out = small_fs / "run"
    # a big enough model that its checkpoint cannot fit in 2 MB: the default vocabulary
    code, err, _ = run_cli(capsys, "train", paths["data"], "-N", "16", "-B", "2", "--device", "cpu",
                           "--eval-interval", "0", "--steps", "2", "--out", out)
    assert code == 1
    line = error_line(err)
    assert line.startswith(f"error: finished 2 steps, but the checkpoint was not saved: no space left on {out} "
                           f"(needed about ")
    assert line.endswith(" MB); no checkpoint was written")
    st = read_status(out)
    assert st is not None and st["state"] == "error" and "no space left on" in st["message"]
    assert not (out / "ckpt.pt").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no partial file left behind


def test_disk_full_keeps_the_previous_checkpoint(world, tmp_path, capsys):
    """A checkpoint fits once on the disk, not twice: the new one fails, the old one stays."""
    mnt = tmp_path / "fits_once"
    mnt.mkdir()
    size = (world["run"] / "ckpt.pt").stat().st_size
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size * 1.5) + 200_000}", "tmpfs", str(mnt)],
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.decode(errors='replace').strip()})")
    try:
        run = mnt / "run"
        shutil.copytree(world["run"], run)
        keep = hashes(run / "ckpt.pt")
        code, err, _ = run_cli(capsys, "train", world["data"], *MODEL, "--steps", "4", "--out", run, "--resume")
        assert code == 1
        line = error_line(err)
        assert re.fullmatch(f"error: finished 4 steps, but the checkpoint was not saved: no space left on {run} "
                            rf"\(needed about \d+ MB\); {run}/ckpt.pt still holds the weights after 2 steps", line)
        assert hashes(run / "ckpt.pt") == keep
        assert_checkpoint_good(run / "ckpt.pt", 2)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_run_end_tells_a_window_where_and_how_much(world, small_fs):
    from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig
    from nanogpt_viz.data.corpus import open_corpus
    from nanogpt_viz.engine.trainer import RunEnd, Trainer

    c = open_corpus(world["data"])
    tr = Trainer(c.train, None, PlanConfig(block_size=16, batch_size=2), MODEL_PRESETS["tiny"].with_(block_size=16),
                 TrainConfig(steps=1, device="cpu", eval_interval=0), out_dir=small_fs / "r")
    end = [e for e in tr.run() if isinstance(e, RunEnd)][0]
    assert end.reason == "error" and end.save_failed and end.checkpoint is None
    assert end.save_dir == str(small_fs / "r") and end.save_needed_bytes > 2_000_000


# ------------------------------------------------------------------------------------------------ item 4: schedule


def _losses(out: str) -> list[float]:
    import json

    return [json.loads(x)["loss"] for x in out.splitlines() if x.startswith("{")]


def test_resume_keeps_a_fixed_schedule_exactly(world, tmp_path, capsys):
    args = ["train", world["data"], *BASE, "--warmup-steps", "2", "--lr-decay-steps", "8", "--json"]
    code, _, straight = run_cli(capsys, *args, "--steps", "8", "--out", tmp_path / "a")
    assert code == 0
    assert run_cli(capsys, *args, "--steps", "4", "--out", tmp_path / "b")[0] == 0
    code, err, resumed = run_cli(capsys, "train", world["data"], *MODEL, "--json", "--steps", "8",
                                 "--out", tmp_path / "b", "--resume")
    assert code == 0, err
    assert _losses(straight)[4:] == _losses(resumed)


def test_resume_keeps_the_first_runs_schedule_and_says_so(world, tmp_path, capsys):
    assert run_cli(capsys, "train", world["data"], *BASE, "--steps", "3", "--out", tmp_path / "b")[0] == 0
    code, err, _ = run_cli(capsys, "train", world["data"], *MODEL, "--steps", "6", "--out", tmp_path / "b", "--resume")
    assert code == 0
    notes = [ln for ln in err.splitlines() if ln.startswith("note: the checkpoint's lr schedule")]
    assert notes == ["note: the checkpoint's lr schedule is kept: cosine decay to 0.0001 by step 3, then 0.0001 to "
                     "step 6; --lr-decay-steps sets another"]
    assert load_checkpoint(tmp_path / "b").extra["train"]["lr_decay_steps"] == 3


def test_resume_with_a_changed_schedule_says_so_in_one_line(paths, capsys):
    code, err, _ = run_cli(capsys, *fmt([*R, "--lr", "0.002", "--warmup-steps", "1"], paths))
    assert code == 0
    notes = [ln for ln in err.splitlines() if "differs from the checkpoint" in ln]
    assert notes == ["note: the recipe differs from the checkpoint's (learning rate 0.001 -> 0.002, warmup steps "
                     "20 -> 1): from the resume on, this run trains under the new values"]


# ------------------------------------------------------------------------------------------------ item 10: ids


def test_token_id_beyond_the_vocabulary_is_named_where_the_batch_is_built(world, tmp_path, capsys, monkeypatch):
    """The open-time check samples the ends only; the batch check sees the id in the middle."""
    monkeypatch.setattr(corpus_mod, "OPEN_VALIDATE_TOKENS", 64)
    rng = np.random.default_rng(1)
    train = rng.integers(0, V, 4000)
    train[200] = 300  # read by step 6 (32 tokens a step, sequential)
    data = nanogpt_dir(tmp_path / "data", train, rng.integers(0, V, 600))
    out = tmp_path / "out"
    code, err, _ = run_cli(capsys, "train", data, *BASE, "--steps", "10", "--out", out)
    assert code == 1
    assert error_line(err) == (
        f"error: token id 300 at {data}/train.bin, token 200, byte 400 of the token data (train split) is >= the "
        f"model's vocabulary of 256; the file does not hold token ids this model can read (a corrupt or foreign "
        f"file?). Nothing was trained on that batch")
    assert_checkpoint_good(out / "ckpt.pt", 6)  # the steps before it are saved


# ------------------------------------------------------------------------------------------------ item 11


def test_undecodable_text_accepted_on_request_with_the_share_reported(world, tmp_path, capsys):
    bad = world["bad"]
    code, err, _ = run_cli(capsys, "prepare", bad / "latin1.txt", "-o", tmp_path / "p", "--accept-undecodable")
    assert code == 0, err
    assert f"note: {bad}/latin1.txt: 2,100 of 11,400 bytes (18%) are not UTF-8 and were read as U+FFFD" in err
    # a few bad bytes: accepted, and said on every open (the second one from the cache)
    for _ in range(2):
        code, err, _ = run_cli(capsys, "plan", bad / "mostly_utf8.txt", "-N", "4", "-B", "1")
        assert code == 0
        assert f"note: {bad}/mostly_utf8.txt: 2 of 14,002 bytes (0.014%) are not UTF-8 and were read as U+FFFD" in err


def test_undecodable_share_is_exposed_for_the_window(world):
    from nanogpt_viz.data.corpus import UndecodableText, open_corpus

    with pytest.raises(UndecodableText) as info:
        open_corpus(world["bad"] / "latin1.txt")
    assert info.value.replaced == 2100 and info.value.total == 11400 and abs(info.value.fraction - 0.184) < 0.001
    c = open_corpus(world["bad"] / "latin1.txt", accept_undecodable=True)
    assert (c.undecodable_bytes, c.source_bytes) == (2100, 11400)


# ------------------------------------------------------------------------------------------------ item 12


def test_stale_partial_checkpoints_are_removed_when_a_run_starts(paths, capsys):
    run = Path(paths["run"])
    (run / ".ckpt.pt.k2j3h4.tmp").write_bytes(b"x" * 1000)  # an older save's name
    (run / f".ckpt.pt.{2**22 + 12345}-abcd.tmp").write_bytes(b"x" * 500)  # a pid that is not running
    (run / ".ckpt.pt.1-live.tmp").write_bytes(b"x")  # pid 1 is alive: maybe still writing, left alone
    code, err, _ = run_cli(capsys, *fmt(R, paths))
    assert code == 0, err
    assert f"note: removed 2 partial checkpoint file(s) left by an interrupted save (0.0 MB) from {run}" in err
    assert sorted(p.name for p in run.glob(".ckpt.pt.*.tmp")) == [".ckpt.pt.1-live.tmp"]
    assert_checkpoint_good(run / "ckpt.pt", 4)


# ------------------------------------------------------------------------------------------------ more


def test_unreadable_file_is_named(world, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    p = tmp_path / "secret.bin"
    write_nanogpt_bin(p, np.arange(100))
    p.chmod(0)
    code, err, _ = run_cli(capsys, "plan", p, "-N", "4", "-B", "1")
    assert code == 2 and error_line(err) == f"error: {p} cannot be read: permission denied."


def test_read_only_run_directory_is_a_failure_with_the_reason(world, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    run = tmp_path / "ro"
    shutil.copytree(world["run"], run)
    keep = hashes(run / "ckpt.pt")
    run.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        code, err, _ = run_cli(capsys, "train", world["data"], *MODEL, "--steps", "3", "--out", run, "--resume")
    finally:
        run.chmod(0o755)
    assert code != 0 and "Traceback" not in err
    assert hashes(run / "ckpt.pt") == keep


def test_ctrl_c_during_a_run_saves_a_finite_checkpoint(world, tmp_path):
    """SIGINT while training: the run stops after the step, and the checkpoint loads with finite weights."""
    out = tmp_path / "out"
    env = {**os.environ, "NANOGPT_VIZ_CACHE": str(world["root"] / "cache")}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "nanogpt_viz", "train", str(world["data"]), *BASE,
                             "--steps", "100000", "--out", str(out), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline()  # a step has been trained
    assert first.startswith("{"), proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    ck = load_checkpoint(out)
    assert ck.iter_num >= 1
    assert_checkpoint_good(out / "ckpt.pt")


# ------------------------------------------------------------------------------------------------ items 3 and 13


def test_an_existing_run_directory_is_refused_and_kept(paths, capsys):
    """Item 3: `train --out RUN` on a directory that holds a run, without --resume or --overwrite, is refused with
    one line naming both flags; the run's files are byte-identical after it, its checkpoint loads and is finite."""
    run = Path(paths["run"])
    before = hashes(run)
    code, err, _ = run_cli(capsys, "train", paths["data"], *BASE, "--steps", "3", "--out", run)
    assert code == 2 and "Traceback" not in err
    line = error_line(err)
    assert "--resume" in line and "--overwrite" in line
    assert hashes(run) == before
    assert_checkpoint_good(run / "ckpt.pt", 2)
    code, err, _ = run_cli(capsys, "train", paths["data"], *BASE, "--steps", "3", "--out", run, "--overwrite")
    assert code == 0, err
    assert_checkpoint_good(run / "ckpt.pt", 3)


def test_the_refresh_clock_is_never_rearmed_while_events_flood(qtbot):
    """Item 13: the window's one clock ticks at a fixed interval and keeps painting while events flood for longer
    than the longest paint period; nothing calls setInterval on it (which restarts a running QTimer)."""
    import time

    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtWidgets import QApplication

    from nanogpt_viz.ui.refresh import PERIOD_MAX_MS, TICK_MS, RefreshClock

    clock = RefreshClock()
    painted = []
    clock.add_painter(lambda: painted.append(time.monotonic()))
    clock.start(period_ms=PERIOD_MAX_MS)
    sink = QObject()
    end = time.monotonic() + PERIOD_MAX_MS / 1000 * 2 + 0.5
    while time.monotonic() < end:  # a flood of events (as a moving mouse makes), and a change to show each time
        for _ in range(50):
            QApplication.postEvent(sink, QEvent(QEvent.Type.User))
        clock.request()
        qtbot.wait(10)
        assert clock.timer.isActive() and clock.timer.interval() == TICK_MS
    clock.timer.stop()
    assert len(painted) >= 2  # it painted during the flood, at least once per longest period
