"""The real `nanogpt-viz` command line, run as a subprocess (`python -m nanogpt_viz ...`).

Every test goes through argparse, the engine and the process exit status exactly as a user does;
the text-token cache lives in the test's tmp folder (NANOGPT_VIZ_CACHE).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanogpt_viz.data.corpus import write_llmc_shard, write_nanogpt_bin
from nanogpt_viz.data.tokenizer import get_encoding

from helpers import write_nanogpt_checkpoint

ROW_LINE = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\[([\d,]+), ([\d,]+)\)\s+\[([\d,]+), ([\d,]+)\)"
                      r"\s+(\S+)\+([\d,]+)$")


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["NANOGPT_VIZ_CACHE"] = str(cache)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):  # never look like torchrun
        env.pop(k, None)
    return env


def cli(cache: Path, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nanogpt_viz", *map(str, args)], capture_output=True, text=True,
                          env=_env(cache), timeout=timeout)


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout[-2000:]}\nstderr:\n{res.stderr[-2000:]}"
    assert "Traceback" not in res.stderr
    return res


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_text(n_topics: int = 12) -> str:
    from pydoc_data.topics import topics

    keys = sorted(topics)[:n_topics]
    return "\n\n".join(topics[k] for k in keys)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A text file, its GPT-2 tokens, and a 10,000-token nanoGPT .bin with known contents."""
    d = tmp_path_factory.mktemp("cli")
    text = make_text()
    txt = d / "corpus.txt"
    txt.write_text(text, encoding="utf-8")
    tokens = np.asarray(get_encoding().encode_ordinary(text), dtype=np.int64)
    bin_tokens = (np.arange(10_000, dtype=np.int64) * 7919) % 50257  # distinct neighbours, all < vocab
    bin_path = d / "tokens.bin"
    write_nanogpt_bin(bin_path, bin_tokens)
    return {"dir": d, "cache": d / "cache", "txt": txt, "text": text, "text_tokens": tokens,
            "bin": bin_path, "bin_tokens": bin_tokens}


# ---------------------------------------------------------------------------------------------- plan


def test_plan_founding_example_json(files):
    res = ok(cli(files["cache"], "plan", files["bin"], "--block-size", 1024, "--batch-size", 4, "--steps", 2, "--json"))
    recs = json_lines(res.stdout)
    assert [r["step"] for r in recs] == [0, 1]
    assert [r["epoch"] for r in recs] == [0, 0]
    for r in recs:
        assert all(set(row) == {"rank", "micro", "row", "start", "shard", "shard_offset"} for row in r["rows"])
        assert all(row["shard"] == Path(files["bin"]).name and row["shard_offset"] == row["start"]
                   for row in r["rows"])
        assert [row["row"] for row in r["rows"]] == [0, 1, 2, 3]
    assert [row["start"] for row in recs[0]["rows"]] == [0, 1024, 2048, 3072]
    assert recs[1]["rows"][0]["start"] == 4096
    assert [row["start"] for row in recs[1]["rows"]] == [4096, 5120, 6144, 7168]


def test_plan_tokens_are_the_file_tokens_shifted(files):
    N = 1024
    res = ok(cli(files["cache"], "plan", files["bin"], "-N", N, "-B", 4, "--steps", 2, "--json", "--tokens"))
    t = files["bin_tokens"]
    rows = [row for rec in json_lines(res.stdout) for row in rec["rows"]]
    assert len(rows) == 8
    for row in rows:
        s, x, y = row["start"], row["x"], row["y"]
        assert len(x) == len(y) == N
        assert x[1:] == y[:-1]
        assert x == t[s:s + N].tolist()
        assert y == t[s + 1:s + N + 1].tolist()


def test_plan_text_file_tokens_match_the_tokenizer(files):
    N = 32
    res = ok(cli(files["cache"], "plan", files["txt"], "-N", N, "-B", 3, "--steps", 2, "--start-step", 4,
                 "--json", "--tokens"))
    t = files["text_tokens"]
    recs = json_lines(res.stdout)
    assert [r["step"] for r in recs] == [4, 5]
    starts = [row["start"] for r in recs for row in r["rows"]]
    assert starts == [g * N for g in range(12, 18)]
    for r in recs:
        for row in r["rows"]:
            assert row["x"] == t[row["start"]:row["start"] + N].tolist()
            assert row["y"] == t[row["start"] + 1:row["start"] + N + 1].tolist()
    assert (files["cache"]).is_dir() and any(files["cache"].glob("gpt2-*.bin"))  # the cache went to tmp


def test_plan_every_rank_micro_row_combination(files):
    K, W, B = 2, 2, 3
    res = ok(cli(files["cache"], "plan", files["bin"], "-N", 64, "-B", B, "--grad-accum", K, "--world-size", W,
                 "--steps", 2, "--json"))
    recs = json_lines(res.stdout)
    assert len(recs) == 2
    seen_starts = []
    for r in recs:
        combos = [(row["rank"], row["micro"], row["row"]) for row in r["rows"]]
        assert sorted(combos) == [(rk, m, i) for rk in range(W) for m in range(K) for i in range(B)]
        assert len(set(combos)) == K * W * B
        seen_starts += [row["start"] for row in r["rows"]]
    # sequential: two steps read 2*K*W*B distinct, non-overlapping blocks 0..23 (as a set)
    assert sorted(seen_starts) == [64 * g for g in range(2 * K * W * B)]


def test_plan_random_is_reproducible_per_seed(files):
    args = ["plan", files["bin"], "-N", 128, "-B", 8, "--sampling", "random", "--steps", 3, "--json"]
    a = ok(cli(files["cache"], *args, "--seed", 1)).stdout
    b = ok(cli(files["cache"], *args, "--seed", 1)).stdout
    c = ok(cli(files["cache"], *args, "--seed", 2)).stdout
    assert a == b
    assert a != c
    L = 9_000  # the train split of a lone .bin: the first 90% (val fraction 0.1)
    starts = [row["start"] for rec in json_lines(a) for row in rec["rows"]]
    assert len(starts) == 24 and all(0 <= s <= L - 128 - 1 for s in starts)


def test_plan_start_step_wraps_into_later_epochs(files):
    # 9,000 train tokens, N=1024, B=4: 8 blocks -> 2 steps per epoch; step 5 = epoch 2, second step
    res = ok(cli(files["cache"], "plan", files["bin"], "-N", 1024, "-B", 4, "--start-step", 5, "--steps", 2,
                 "--json"))
    recs = json_lines(res.stdout)
    assert [(r["step"], r["epoch"]) for r in recs] == [(5, 2), (6, 3)]
    assert [row["start"] for row in recs[0]["rows"]] == [4096, 5120, 6144, 7168]
    assert [row["start"] for row in recs[1]["rows"]] == [0, 1024, 2048, 3072]


def test_plan_split_val(files, tmp_path):
    # a lone .bin: val is the last 10% of the file
    N = 16
    res = ok(cli(files["cache"], "plan", files["bin"], "-N", N, "-B", 2, "--split", "val", "--json", "--tokens"))
    t = files["bin_tokens"]
    rows = json_lines(res.stdout)[0]["rows"]
    assert [r["start"] for r in rows] == [0, 16]
    for r in rows:
        assert r["x"] == t[9000 + r["start"]:9000 + r["start"] + N].tolist()
    # a nanoGPT folder: train.bin + val.bin
    d = tmp_path / "data"
    d.mkdir()
    write_nanogpt_bin(d / "train.bin", np.full(500, 7))
    write_nanogpt_bin(d / "val.bin", np.arange(300) + 100)
    res = ok(cli(files["cache"], "plan", d, "-N", N, "-B", 2, "--split", "val", "--json", "--tokens"))
    rows = json_lines(res.stdout)[0]["rows"]
    assert rows[1]["x"] == list(range(116, 132))
    res = ok(cli(files["cache"], "plan", d, "-N", N, "-B", 2, "--json", "--tokens"))
    assert json_lines(res.stdout)[0]["rows"][0]["x"] == [7] * N


def test_plan_table_output(files):
    K, W, B, N, steps = 2, 2, 2, 64, 2
    res = ok(cli(files["cache"], "plan", files["bin"], "-N", N, "-B", B, "-K", K, "-W", W, "--steps", steps))
    lines = res.stdout.splitlines()
    header = [ln for ln in lines if "tokens per step" in ln]
    assert len(header) == 1
    assert f"{K * W * B * N:,}" in header[0]
    rows = [ROW_LINE.match(ln) for ln in lines]
    rows = [m for m in rows if m]
    assert len(rows) == steps * K * W * B
    # the table and --json agree row for row
    js = json_lines(ok(cli(files["cache"], "plan", files["bin"], "-N", N, "-B", B, "-K", K, "-W", W,
                           "--steps", steps, "--json")).stdout)
    want = [(rec["step"], row["rank"], row["micro"], row["row"], row["start"]) for rec in js for row in rec["rows"]]
    got = []
    for m in rows:
        step, _epoch, rank, micro, row = (int(m.group(i)) for i in range(1, 6))
        x0, x1, y0, y1 = (int(m.group(i).replace(",", "")) for i in range(6, 10))
        assert x1 - x0 == N and (y0, y1) == (x0 + 1, x1 + 1)
        got.append((step, rank, micro, row, x0))
    assert got == want
    # every other line is a header/comment line, not a stray row
    assert len(lines) == len(rows) + 3


# ---------------------------------------------------------------------------------------------- prepare


def test_prepare_text_writes_train_and_val_bins(files, tmp_path):
    out = tmp_path / "prep"
    res = ok(cli(files["cache"], "prepare", files["txt"], "-o", out))
    counts = dict(re.findall(r"^(train|val)\.bin: ([\d,]+) tokens$", res.stdout, flags=re.M))
    n_train, n_val = int(counts["train"].replace(",", "")), int(counts["val"].replace(",", ""))
    assert (out / "train.bin").stat().st_size == 2 * n_train
    assert (out / "val.bin").stat().st_size == 2 * n_val
    train = np.fromfile(out / "train.bin", dtype="<u2")
    val = np.fromfile(out / "val.bin", dtype="<u2")
    # nanoGPT's data/shakespeare/prepare.py: the TEXT is cut at int(n*0.9) characters, each part encoded
    text, enc = files["text"], get_encoding()
    cut = int(len(text) * 0.9)
    assert (out / "train.bin").read_bytes() == np.array(enc.encode_ordinary(text[:cut]), dtype=np.uint16).tobytes()
    assert (out / "val.bin").read_bytes() == np.array(enc.encode_ordinary(text[cut:]), dtype=np.uint16).tobytes()

    out2 = tmp_path / "prep2"
    res2 = ok(cli(files["cache"], "prepare", files["txt"], "-o", out2, "--val-fraction", 0.2))
    val2 = np.fromfile(out2 / "val.bin", dtype="<u2")
    cut2 = int(len(text) * 0.8)  # --val-fraction: a fraction of the characters
    assert val2.tolist() == enc.encode_ordinary(text[cut2:]) and len(val2) > len(val)
    assert np.fromfile(out2 / "train.bin", dtype="<u2").tolist() == enc.encode_ordinary(text[:cut2])
    assert f"val.bin: {len(val2):,} tokens" in res2.stdout

    # the prepared folder is a nanoGPT data dir the CLI reads back
    res3 = ok(cli(files["cache"], "plan", out, "-N", 8, "-B", 1, "--split", "val", "--json", "--tokens"))
    assert json_lines(res3.stdout)[0]["rows"][0]["x"] == val[:8].astype(int).tolist()


def test_prepare_cuts_the_text_not_the_tokens(files, tmp_path):
    # a hand-made text whose 90% character cut falls inside a word: a token split cannot give these files
    text = "Sentences about tokenization. " * 9 + "Incomprehensibilities\n"
    cut = int(len(text) * 0.9)
    enc = get_encoding()
    assert text[cut - 1].isalpha() and text[cut].isalpha()
    assert enc.encode_ordinary(text[:cut]) + enc.encode_ordinary(text[cut:]) != enc.encode_ordinary(text)
    (tmp_path / "input.txt").write_text(text, encoding="utf-8")
    ok(cli(files["cache"], "prepare", tmp_path / "input.txt", "-o", tmp_path / "out"))
    assert (tmp_path / "out" / "train.bin").read_bytes() == np.array(enc.encode_ordinary(text[:cut]),
                                                                     dtype=np.uint16).tobytes()
    assert (tmp_path / "out" / "val.bin").read_bytes() == np.array(enc.encode_ordinary(text[cut:]),
                                                                   dtype=np.uint16).tobytes()


# ---------------------------------------------------------------------------------------------- bad input


def _bad_inputs(d: Path, files) -> dict[str, tuple[list, str]]:
    (d / "empty.txt").write_bytes(b"")
    (d / "binary.dat").write_bytes(b"abc\x00def\x01" * 200)
    (d / "odd.bin").write_bytes(b"\x01\x02\x03")
    write_nanogpt_bin(d / "highid.bin", np.full(100, 60000))
    write_llmc_shard(d / "shard.bin", np.arange(5000))
    with open(d / "shard.bin", "ab") as f:
        f.write(b"\x00\x00\x00\x00")  # 2 tokens more than the header says
    (d / "emptydir").mkdir()
    b = files["bin"]
    plan = ["plan"]
    return {
        "missing file": (plan + [d / "nope.txt", "-N", 8, "-B", 2], "nope.txt"),
        "empty file": (plan + [d / "empty.txt", "-N", 8, "-B", 2], "empty"),
        "binary file": (plan + [d / "binary.dat", "-N", 8, "-B", 2], "binary"),
        "odd-size bin": (plan + [d / "odd.bin", "-N", 8, "-B", 2], "uint16"),
        "ids >= vocab": (plan + [d / "highid.bin", "-N", 8, "-B", 2], "60000"),
        "shorter than N+1": (plan + [b, "-N", 20000, "-B", 1], "N+1"),
        "block size 0": (plan + [b, "--block-size", 0, "-B", 1], "block size"),
        "batch size -1": (plan + [b, "-N", 8, "--batch-size", -1], "batch size"),
        "block size abc": (plan + [b, "--block-size", "abc", "-B", 1], "whole number"),
        "sampling bogus": (plan + [b, "-N", 8, "-B", 1, "--sampling", "bogus"], "bogus"),
        "llm.c count mismatch": (plan + [d / "shard.bin", "-N", 8, "-B", 2], "header says 5000"),
        "sample without ckpt": (["sample", d / "emptydir"], "checkpoint"),
        "resume without ckpt": (["train", b, "--resume", "--out", d / "norun", "--steps", 2], "resume"),
        "grad accum not divisible": (["train", b, "--global-grad-accum", 3, "--world-size", 2, "--steps", 1,
                                      "--out", d / "gga"], "divide"),
        "prompt bad escape": (["sample", d / "emptydir", "--prompt", "a\\x"], "escape"),
        "bf16 residual, fp32 training": (["train", b, "--residual-dtype", "bfloat16", "--dtype", "float32",
                                          "--steps", 1, "--out", d / "rd"], "residual"),
    }


def test_bad_input_is_one_error_line_and_exit_2(files, tmp_path):
    cases = _bad_inputs(tmp_path, files)
    # all at once: each is a separate process; running them side by side keeps the file fast
    procs = {name: subprocess.Popen([sys.executable, "-m", "nanogpt_viz", *map(str, args)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=_env(files["cache"]))
             for name, (args, _) in cases.items()}
    failures = []
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        want = cases[name][1]
        lines = err.strip().splitlines()
        if (p.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: ")
                or "Traceback" in out + err or want.lower() not in lines[0].lower()):
            failures.append(f"{name}: exit {p.returncode}, stderr={err!r}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "norun" / "ckpt.pt").exists()
    assert not (tmp_path / "gga" / "ckpt.pt").exists()


def test_resume_a_nanogpt_checkpoint_takes_n_b_k_and_the_model_from_it(files, tmp_path):
    from nanogpt_viz.engine.checkpoint import load_checkpoint
    from nanogpt_viz.config import ModelConfig

    # as nanoGPT's train.py on a CPU writes it (fused: None in the AdamW groups), block size 32 (not our 64)
    model = ModelConfig(block_size=32, vocab_size=50304, n_layer=1, n_head=2, n_embd=16, bias=False)
    config = {"block_size": 32, "batch_size": 3, "gradient_accumulation_steps": 2, "max_iters": 5}
    run_dir = tmp_path / "ng"
    run_dir.mkdir()
    write_nanogpt_checkpoint(run_dir / "ckpt.pt", model, iter_num=5, config=config)
    res = ok(cli(files["cache"], "train", files["bin"], "--resume", "--out", run_dir, "--steps", 7, "--json",
                 "--device", "cpu"))
    assert [r["step"] for r in json_lines(res.stdout)] == [5, 6]
    ckpt = load_checkpoint(run_dir / "ckpt.pt")
    assert ckpt.iter_num == 7 and ckpt.model_args == model.to_dict()
    assert {k: ckpt.extra["plan"][k] for k in ("block_size", "batch_size", "grad_accum")} == {
        "block_size": 32, "batch_size": 3, "grad_accum": 2}

    # what the command line gives wins; an N beyond the model's context is one error line
    write_nanogpt_checkpoint(run_dir / "ckpt.pt", model, iter_num=5, config=config, optimizer="gpu")
    ok(cli(files["cache"], "train", files["bin"], "--resume", "--out", run_dir, "--steps", 6, "-N", 16, "-B", 2,
           "-K", 1, "--device", "cpu"))
    assert {k: load_checkpoint(run_dir / "ckpt.pt").extra["plan"][k] for k in ("block_size", "batch_size",
                                                                                "grad_accum")} == {
        "block_size": 16, "batch_size": 2, "grad_accum": 1}
    write_nanogpt_checkpoint(run_dir / "ckpt.pt", model, iter_num=5, config=config)
    res = cli(files["cache"], "train", files["bin"], "--resume", "--out", run_dir, "--steps", 6, "-N", 64)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    assert "N=64" in res.stderr and "Traceback" not in res.stderr


def test_sample_bad_escape_is_checked_on_a_real_checkpoint(trained):
    res = cli(trained["cache"], "sample", trained["out"], "--prompt", "abc\\x4", "--tokens", 2)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr


# ---------------------------------------------------------------------------------------------- train


@pytest.fixture(scope="module")
def trained(files):
    from nanogpt_viz.engine.checkpoint import load_checkpoint

    out = files["dir"] / "run"
    res = ok(cli(files["cache"], "train", files["txt"], "--preset", "tiny", "--block-size", 16, "--batch-size", 4,
                 "--steps", 6, "--eval-interval", 3, "--out", out, "--json"))
    recs = json_lines(res.stdout)
    ckpt = load_checkpoint(out / "ckpt.pt")
    return {"out": out, "cache": files["cache"], "txt": files["txt"], "recs": recs, "stderr": res.stderr,
            "iter_num": ckpt.iter_num, "ckpt": ckpt}


def test_train_json_then_resume_then_sample(trained):
    from nanogpt_viz.engine.checkpoint import load_checkpoint

    out, recs = trained["out"], trained["recs"]
    assert [r["step"] for r in recs] == list(range(6))
    for r in recs:
        assert {"step", "loss", "lr", "tokens_per_s"} <= set(r)
        assert isinstance(r["loss"], float) and np.isfinite(r["loss"])
        assert r["lr"] > 0 and r["tokens_per_s"] > 0
    # --eval-interval 3: a val loss after steps 3 and 6 only
    assert [r["step"] for r in recs if r["val_loss"] is not None] == [2, 5]
    assert trained["iter_num"] == 6
    ckpt = trained["ckpt"]
    assert ckpt.extra["plan"]["block_size"] == 16 and ckpt.extra["plan"]["batch_size"] == 4
    metrics = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    assert [m["step"] for m in metrics] == list(range(6))
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 6

    res = ok(cli(trained["cache"], "train", trained["txt"], "--preset", "tiny", "--block-size", 16,
                 "--batch-size", 4, "--steps", 9, "--eval-interval", 3, "--out", out, "--json", "--resume"))
    recs2 = json_lines(res.stdout)
    assert [r["step"] for r in recs2] == [6, 7, 8]
    assert load_checkpoint(out / "ckpt.pt").iter_num == 9
    metrics = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    assert [m["step"] for m in metrics] == list(range(9))
    assert json.loads((out / "status.json").read_text())["state"] == "finished"

    res = ok(cli(trained["cache"], "sample", out, "--tokens", 5, "--seed", 1))
    assert res.stdout.strip()
    again = ok(cli(trained["cache"], "sample", out / "ckpt.pt", "--tokens", 5, "--seed", 1))
    assert again.stdout == res.stdout  # a seed makes sampling reproducible
    res = ok(cli(trained["cache"], "sample", out, "--tokens", 3, "--seed", 1, "--prompt", "café\\n"))
    assert res.stdout.startswith("café\n")  # escapes decoded, non-ASCII kept


def test_train_progress_mode(files, tmp_path):
    out = tmp_path / "run"
    res = ok(cli(files["cache"], "train", files["txt"], "--preset", "tiny", "--block-size", 16, "--batch-size", 2,
                 "--steps", 3, "--eval-interval", 0, "--out", out))
    assert res.stdout == ""
    last = res.stderr.strip().splitlines()[-1]
    assert "checkpoint" in last and str(out / "ckpt.pt") in last
    assert "step 3/3" in res.stderr
    assert (out / "ckpt.pt").is_file()


def test_ctrl_c_stops_and_writes_a_checkpoint(files, tmp_path):
    from nanogpt_viz.engine.checkpoint import load_checkpoint

    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "nanogpt_viz", "train", str(files["txt"]), "--preset", "tiny",
                          "--block-size", "16", "--batch-size", "4", "--steps", "100000", "--eval-interval", "0",
                          "--out", str(out), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(files["cache"]))
    try:
        first = p.stdout.readline()
        assert first, p.stderr.read()
        assert json.loads(first)["step"] == 0
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=20)  # a stop request finishes the current step, then exits
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert "stopped" in err
    steps = [json.loads(first)["step"]] + [r["step"] for r in json_lines(rest)]
    ckpt = load_checkpoint(out / "ckpt.pt")
    assert ckpt.iter_num >= 1
    assert ckpt.iter_num == steps[-1] + 1  # the checkpoint holds every reported step
    assert json.loads((out / "status.json").read_text())["state"] == "stopped"


# ---------------------------------------------------------------------------------------------- misc


def test_version(files):
    from nanogpt_viz import __version__

    res = ok(cli(files["cache"], "--version"))
    assert res.stdout.strip() == f"nanogpt-viz {__version__}"
    res = subprocess.run(["nanogpt-viz", "--version"], capture_output=True, text=True, env=_env(files["cache"]))
    assert res.returncode == 0 and __version__ in res.stdout


def test_window_without_a_display_explains_instead_of_aborting(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    res = subprocess.run([sys.executable, "-m", "nanogpt_viz"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith("error: no display") and res.stderr.count("\n") == 1
    env["QT_QPA_PLATFORM"] = "offscreen"
    res = subprocess.run([sys.executable, "-m", "nanogpt_viz", str(tmp_path / "missing.txt")], capture_output=True,
                         text=True, env=env, timeout=60)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "missing.txt" in res.stderr


def test_a_missing_qt_library_is_named_with_its_install_line(monkeypatch):
    """On Linux without libxcb-cursor0 Qt aborts (exit 134); the CLI names the package instead."""
    from nanogpt_viz import cli as cli_mod

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert cli_mod.missing_window_libraries(lambda lib: None) == ["libxcb-cursor0"]
    assert cli_mod.missing_window_libraries(lambda lib: f"lib{lib}.so.0") == []
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert cli_mod.missing_window_libraries(lambda lib: None) == []  # not X11: not needed
    monkeypatch.delenv("QT_QPA_PLATFORM")
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(cli_mod, "missing_window_libraries", lambda find=None: ["libxcb-cursor0"])
    with pytest.raises(cli_mod.CliError, match="sudo apt-get install libxcb-cursor0"):
        cli_mod.cmd_gui(cli_mod.build_parser().parse_args(["gui"]))
