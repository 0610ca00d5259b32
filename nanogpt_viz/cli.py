"""Command line: `nanogpt-viz [CORPUS]` opens the window; subcommands script the same engine.

    nanogpt-viz prepare CORPUS -o DIR [--val-fraction F]
    nanogpt-viz plan CORPUS --block-size N --batch-size B [...] [--json] [--tokens]
    nanogpt-viz train CORPUS [plan options] [--preset P] [...] [--out DIR] [--resume] [--json]
    nanogpt-viz sample DIR [--prompt TEXT] [--tokens n]

Every bad input ends with one `error: ...` line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from nanogpt_viz.config import (DEFAULT_SEED, DEVICES, SEED_MAX, DTYPES, EVAL_PROTOCOLS, MODEL_PRESETS, RESIDUAL_DTYPES,
                                SAMPLING_HELP, SAMPLING_MODES, ModelConfig, PlanConfig, TrainConfig)
from nanogpt_viz.run.record import (DEFAULT_HISTORY_BUDGET, RUNS_ROOT, STOP_REQUEST,  # the run directory's protocol
                                    parse_bytes)

SUBCOMMANDS = ("gui", "prepare", "plan", "train", "sample", "topk")
EXIT_USAGE = 2


class CliError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage first otherwise)
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _at_least(minimum: int):
    def checker(name: str):
        def parse(text: str) -> int:
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{name} must be a whole number (got {text!r})") from None
            if value < minimum:
                raise argparse.ArgumentTypeError(f"{name} must be >= {minimum} (got {value})")
            return value
        return parse
    return checker


_positive = _at_least(1)
_nonneg = _at_least(0)


def _number(name: str, *, minimum: float = 0.0, strict: bool = False):
    """A finite float >= minimum (> minimum when strict): nan, inf and negatives are refused at parse time."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number (got {text!r})") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number (got {text!r})")
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"{name} must be {'>' if strict else '>='} {minimum:g} (got {text!r})")
        return value
    return parse


def _seed(text: str) -> int:
    """One range for seeds everywhere (config.SEED_MAX): llm.c's unsigned 32-bit seed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a whole number (got {text!r})") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"seed must be in 0..{SEED_MAX} (got {text})")
    return value


def _size(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number (got {text!r})") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (got {value})")
    return value


def _add_plan_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    g = p.add_argument_group("batch plan")
    g.add_argument("--block-size", "-N", type=_positive("block size N"), required=required,
                   help="tokens per row (context length N)")
    g.add_argument("--batch-size", "-B", type=_positive("batch size B"), required=required,
                   help="rows per micro-batch per rank (B)")
    g.add_argument("--grad-accum", "-K", type=_positive("gradient accumulation K"), default=1,
                   help="micro-batches per rank per optimizer step (K)")
    g.add_argument("--world-size", "-W", type=_positive("world size W"), default=None,
                   help="DDP ranks (W); under torchrun taken from the environment")
    g.add_argument("--sampling", choices=SAMPLING_MODES, default="sequential",
                   help="; ".join(f"{k}: {v}" for k, v in SAMPLING_HELP.items()))
    g.add_argument("--stride", type=_positive("stride S"), default=1, help="row stride S for --sampling sliding")
    g.add_argument("--seed", type=_seed, default=None,
                   help="sampling seed (default: 42 for shuffled, llm.c's own order; 1337 otherwise, nanoGPT's)")
    g.add_argument("--split", choices=("train", "val"), default="train")
    g.add_argument("--val-fraction", type=_fraction, default=0.1,
                   help="where the data has no val file: the fraction held out as the val split (default "
                        "0.1); raw text is cut by characters as nanoGPT's prepare.py cuts it, token files by tokens")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="nanogpt-viz", description="See how GPT-2 / nanoGPT training cuts batches out of a "
                 "corpus, then train the real model on exactly those batches.")
    sub = ap.add_subparsers(dest="command", parser_class=_Parser)

    g = sub.add_parser("gui", help="open the window (the default)")
    g.add_argument("corpus", nargs="?", help="a text file, nanoGPT .bin, llm.c shard(s), .npy shard(s) or a directory; "
                   "a run directory (one holding run.json) opens that run on its corpus")

    p = sub.add_parser("prepare", help="tokenize a corpus into nanoGPT's train.bin / val.bin")
    p.add_argument("corpus")
    p.add_argument("-o", "--out", required=True, help="output directory")
    p.add_argument("--val-fraction", type=_fraction, default=0.1,
                   help="fraction held out as val.bin (default 0.1); text is cut at character int(n*(1-F)) and "
                        "each part tokenized on its own, byte for byte as nanoGPT's data/shakespeare/prepare.py")
    _add_undecodable(p)

    p = sub.add_parser("plan", help="print which tokens every row of every step reads")
    p.add_argument("corpus")
    _add_plan_options(p, required=False)
    p.add_argument("--from-nanogpt", metavar="CKPT", default=None,
                   help="replay the batches a nanoGPT train.py run drew (its ckpt.pt or out_dir; CORPUS is its data "
                        "folder with train.bin/val.bin): N, B and K come from the checkpoint, -W gives the ranks")
    p.add_argument("--resumed-at", type=_nonneg("resumed at"), default=None,
                   help="with --from-nanogpt: the iteration a run started with init_from='resume' resumed at")
    p.set_defaults(grad_accum=None)  # K: 1, or with --from-nanogpt the run's
    p.add_argument("--start-step", type=_nonneg("start step"), default=0)
    p.add_argument("--steps", type=_positive("steps"), default=1)
    p.add_argument("--tokens", action="store_true", help="include the x and y token ids of each row")
    p.add_argument("--documents", action="store_true",
                   help="count, per step, the rows that read across an <|endoftext|> document boundary and the "
                        "targets that follow one (the first token of a document)")
    p.add_argument("--json", action="store_true", help="one JSON object per optimizer step")
    _add_undecodable(p)

    t = sub.add_parser("train", help="train GPT-2 on the plan's batches (headless)")
    t.add_argument("corpus")
    _add_plan_options(t, required=False)
    # None = not given: K 1 (or on --resume the checkpoint's), the others their defaults, and on --resume
    # a value given that differs from the checkpoint's plan is refused (a resumed run keeps its plan)
    t.set_defaults(grad_accum=None, sampling=None, stride=None, split=None)
    t.add_argument("--preset", choices=tuple(MODEL_PRESETS), default=None,
                   help="model size (default tiny; on --resume the checkpoint's model)")
    for name in ("n_layer", "n_head", "n_embd", "model_block_size", "vocab_size"):
        t.add_argument("--" + name.replace("_", "-"), type=_positive(name), default=None)
    t.add_argument("--dropout", type=_fraction, default=None)
    t.add_argument("--bias", choices=("true", "false"), default=None)
    t.add_argument("--steps", type=_positive("steps"), default=TrainConfig.steps,
                   help="optimizer steps in all, numbered 0..steps-1 (a resumed run continues to the same total). "
                        "nanoGPT's max_iters=M runs M+1 steps (iterations 0..M; it stops once iter_num > "
                        "max_iters): --steps M+1 matches it")
    # the recipe: None = not given (the default, or on --resume the checkpoint's: see _RECIPE_FLAGS)
    t.add_argument("--lr", type=_number("lr", strict=True), default=None,
                   help=f"peak learning rate (default {TrainConfig.learning_rate:g})")
    t.add_argument("--min-lr", type=_number("min lr"), default=None,
                   help=f"learning rate at the end of the cosine decay (default {TrainConfig.min_lr:g})")
    t.add_argument("--warmup-steps", type=_nonneg("warmup steps"), default=None,
                   help=f"linear warmup steps (default {TrainConfig.warmup_steps})")
    t.add_argument("--lr-decay-steps", type=_positive("lr decay steps"), default=None,
                   help="the step the cosine decay reaches min-lr (default: --steps of the run that started "
                        "it; a resumed run keeps its checkpoint's schedule, --steps then only moves the end)")
    t.add_argument("--weight-decay", type=_number("weight decay"), default=None,
                   help=f"AdamW weight decay (default {TrainConfig.weight_decay:g})")
    t.add_argument("--grad-clip", type=_number("grad clip"), default=None,
                   help=f"clip the gradient norm to this (default {TrainConfig.grad_clip:g}; 0 turns it off)")
    t.add_argument("--eval-interval", type=_nonneg("eval interval"), default=TrainConfig.eval_interval)
    t.add_argument("--eval-protocol", choices=EVAL_PROTOCOLS, default=None,
                   help="how the val loss is measured (default: follows --sampling): nanogpt = nanoGPT's "
                        "estimate_loss (random batches from train and val, the train estimate beside val; "
                        "default for random), build-nanogpt = val_loader.reset() then sequential batches "
                        "(sequential), llmc = llm.c's dataloader_reset then sequential batches (llmc, shuffled), "
                        "whole = every val target once (sliding; the one to use when comparing with no code)")
    t.add_argument("--eval-batches", type=_positive("eval batches"), default=None,
                   help="batches per evaluation: nanoGPT's eval_iters under nanogpt (default 200), "
                        "build-nanogpt's val_loss_steps (default 20), llm.c's val_num_batches (default 20); "
                        "whole ignores it (it reads every val target, at most the first 4,194,304)")
    t.add_argument("--checkpoint-interval", type=_nonneg("checkpoint interval"), default=0)
    t.add_argument("--device", choices=DEVICES, default="auto")
    t.add_argument("--dtype", choices=DTYPES, default="auto")
    t.add_argument("--residual-dtype", choices=RESIDUAL_DTYPES, default="float32",
                   help="the residual stream between blocks: float32 as nanoGPT, or bfloat16 as llm.c "
                        "(faster, slightly less precise; bf16 training only)")
    t.add_argument("--compile", dest="compile", action="store_true", default=None)
    t.add_argument("--no-compile", dest="compile", action="store_false")
    t.add_argument("--no-per-token", dest="per_token", action="store_false", default=True,
                   help="skip the per-token loss readout")
    t.add_argument("--no-divide-by-k", dest="divide_by_k", action="store_false", default=True,
                   help="EXPERIMENT, the classic accumulation bug: sum the K micro-batch losses without dividing "
                        "by K, so every gradient is K times too large (grad_norm shows it; clipping hides it)")
    t.add_argument("--global-grad-accum", type=_positive("global gradient accumulation"), default=None,
                   help="nanoGPT's gradient_accumulation_steps (summed over ranks); converted to K = value / W")
    t.add_argument("--out", default=None,
                   help="run directory for run.json, metrics.jsonl, status.json, history/ and ckpt.pt (default: a "
                        "new runs/<timestamp>-<corpus>); one that holds a run is refused unless --resume or --overwrite")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (its run.json, metrics, history and checkpoint are removed first)")
    t.add_argument("--history-budget", type=_size, default=DEFAULT_HISTORY_BUDGET, metavar="BYTES",
                   help="disk for every step's per-token losses (float16, with K/M/G suffixes; default 2G); past "
                        "it the per-token rows of a thinning subset of steps are kept, and the loss by position of all")
    t.add_argument("--resume", action="store_true",
                   help="continue from OUT/ckpt.pt (ours or nanoGPT's) to --steps; N, B, K and the model come "
                        "from the checkpoint unless given")
    t.add_argument("--json", action="store_true", help="one JSON object per step on stdout")
    _add_undecodable(t)

    s = sub.add_parser("sample", help="generate text from a checkpoint")
    s.add_argument("dir", help="a run directory holding ckpt.pt (or the .pt file itself)")
    s.add_argument("--prompt", default="\n")
    s.add_argument("--tokens", type=_positive("tokens"), default=200)
    s.add_argument("--temperature", type=_number("temperature", strict=True), default=0.8)
    s.add_argument("--top-k", type=_positive("top k"), default=200)
    s.add_argument("--seed", type=_seed, default=None)
    s.add_argument("--device", choices=DEVICES, default="auto")
    k = sub.add_parser("topk", help="the model's top next-token predictions at one position of a corpus")
    k.add_argument("dir", help="a run directory holding ckpt.pt (or the .pt file itself)")
    k.add_argument("--corpus", required=True, help="the corpus the position refers to")
    k.add_argument("--offset", type=_nonneg("offset"), required=True,
                   help="the position p (0-based, in the split's stream); the target is t[p+1]")
    k.add_argument("--split", choices=("train", "val"), default="train")
    k.add_argument("--context-start", type=_nonneg("context start"), default=None,
                   help="first token of the context (default: the longest the model allows, p - block_size + 1; "
                        "give a row's start to see exactly what training saw)")
    k.add_argument("-k", "--top", type=_positive("top"), default=10)
    k.add_argument("--device", choices=DEVICES, default="auto")
    k.add_argument("--json", action="store_true")
    return ap


# ------------------------------------------------------------------------------------------------


def _progress_printer(label: str):
    state = {"last": 0.0}

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if sys.stderr.isatty() and (now - state["last"] > 0.1 or done >= total):
            state["last"] = now
            pct = 100.0 * done / total if total else 100.0
            sys.stderr.write(f"\r{label}: {pct:5.1f}% ({done / 1e6:,.1f} of {total / 1e6:,.1f} MB)")
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()
    return progress


def _open(path: str, val_fraction: float = 0.1, accept_undecodable: bool = False):
    from nanogpt_viz.data.corpus import open_corpus, path_problem

    problem = path_problem(path)  # a symlink loop, a FIFO, a /proc file: named for what it is
    if problem:
        raise CliError(problem)
    corpus = open_corpus(path, val_fraction=val_fraction, progress=_progress_printer("tokenizing"),
                         accept_undecodable=accept_undecodable)
    if corpus.undecodable_bytes:  # on every open, cached or not
        sys.stderr.write(f"note: {corpus.path}: {corpus.undecodable_bytes:,} of {corpus.source_bytes:,} bytes "
                         f"({100 * corpus.undecodable_bytes / max(corpus.source_bytes, 1):.2g}%) are not UTF-8 and "
                         f"were read as U+FFFD\n")
    return corpus


def _add_undecodable(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accept-undecodable", action="store_true",
                   help="use a text file even when more than 2%% of its bytes are not UTF-8 (they become U+FFFD)")


def _plan_config(args: argparse.Namespace, world_size: int | None = None) -> PlanConfig:
    return PlanConfig(block_size=args.block_size, batch_size=args.batch_size, grad_accum=args.grad_accum,
                      world_size=world_size or args.world_size or 1, sampling=args.sampling, stride=args.stride,
                      seed=args.seed, split=args.split)


def _nanogpt_draws(args: argparse.Namespace, corpus: Any) -> Any:
    """The replayed draws of the nanoGPT run in args.from_nanogpt; fills N, B, K and sampling in args."""
    from nanogpt_viz.engine.checkpoint import load_checkpoint
    from nanogpt_viz.data.nanogpt_replay import NanoGPTReplay, RunDraws, plan_settings

    ckpt = load_checkpoint(args.from_nanogpt)
    W = args.world_size or 1
    try:
        got = plan_settings(ckpt, W)
    except ValueError as exc:
        raise CliError(f"{args.from_nanogpt}: {exc}") from None
    for name, flag in (("block_size", "-N"), ("batch_size", "-B"), ("grad_accum", "-K")):
        given = getattr(args, name)
        if given is not None and given != got[name]:
            raise CliError(f"{flag} {given} differs from the run's {got[name]} in {args.from_nanogpt}; leave {flag} out")
        setattr(args, name, got[name])
    args.sampling = "random"  # nanoGPT's get_batch
    if args.split != "train":
        raise CliError("--from-nanogpt replays the training batches: use --split train")
    if not corpus.has_split("val"):
        raise CliError(f"{corpus.path} has no val split; give the nanoGPT data folder that holds train.bin and val.bin")
    try:
        replay = NanoGPTReplay.from_checkpoint(ckpt, train_len=len(corpus.train), val_len=len(corpus.val),
                                               world_size=W, resumed_at=args.resumed_at)
    except ValueError as exc:
        raise CliError(f"{args.from_nanogpt}: {exc}") from None
    return RunDraws(replay)


def cmd_prepare(args: argparse.Namespace) -> int:
    from nanogpt_viz.data.corpus import write_nanogpt_bin

    corpus = _open(args.corpus, args.val_fraction, args.accept_undecodable)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = corpus.split("train")
    write_nanogpt_bin(out / "train.bin", train[0:len(train)])
    n_val = 0
    if corpus.has_split("val"):
        val = corpus.split("val")
        n_val = len(val)
        write_nanogpt_bin(out / "val.bin", val[0:n_val])
    print(f"train.bin: {len(train):,} tokens")
    print(f"val.bin: {n_val:,} tokens")
    print(f"wrote {out}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from nanogpt_viz.data.batching import gather_rows, plan_for
    from nanogpt_viz.data.documents import step_documents

    corpus = _open(args.corpus, args.val_fraction, args.accept_undecodable)
    tokens = corpus.split(args.split)
    draws = None
    if args.from_nanogpt is not None:
        draws = _nanogpt_draws(args, corpus)
    elif args.block_size is None or args.batch_size is None:
        raise CliError("plan needs --block-size/-N and --batch-size/-B (or --from-nanogpt CKPT)")
    if args.grad_accum is None:
        args.grad_accum = 1
    plan = plan_for(_plan_config(args), tokens, draws=draws)
    if draws is not None:
        for note in draws.notes:
            sys.stderr.write(f"note: {note}\n")
    out = sys.stdout
    if not args.json:
        s = plan.summary()
        out.write(f"# {corpus.name}: {len(tokens):,} {args.split} tokens, sampling={plan.mode}, "
                  f"N={plan.N} B={plan.B} K={plan.K} W={plan.W}"
                  + (f" S={plan.S}" if plan.mode == "sliding" else "") + "\n")
        out.write(f"# tokens per step = K*W*B*N = {plan.K}*{plan.W}*{plan.B}*{plan.N} = {plan.tokens_per_step:,}; "
                  f"steps per epoch = {s['steps_per_epoch']:,}"
                  + (f"; dropped tail = {s['dropped_tail']:,} tokens" if plan.mode != "random" else
                     " (nominal: random offsets have no epochs)") + "\n")
        if plan.n_shards > 1:
            out.write(f"# {plan.n_shards} shards, read one at a time; each shard's tail is dropped\n")
        drift = plan.first_drift()
        if drift is not None:
            out.write(f"# ranks out of step from step {drift[0]:,}: {drift[1]}\n")
        out.write(f"{'step':>8} {'epoch':>6} {'rank':>4} {'micro':>5} {'row':>4} {'x = t[s:s+N]':>26} "
                  f"{'y = t[s+1:s+N+1]':>26}  shard\n")
    for step in range(args.start_step, args.start_step + args.steps):
        rows = plan.rows(step)
        epoch = plan.epoch(step)
        if args.json:
            recs = []
            xy = gather_rows(tokens, [r.start for r in rows], plan.N + 1) if args.tokens else None
            for i, r in enumerate(rows):
                rec: dict[str, Any] = r.to_dict()
                if xy is not None:
                    rec["x"] = xy[i, :-1].tolist()
                    rec["y"] = xy[i, 1:].tolist()
                recs.append(rec)
            rec_step: dict[str, Any] = {"step": step, "epoch": epoch, "rows": recs}
            if args.documents:
                rec_step["documents"] = step_documents(tokens, plan, step).to_dict()
            if draws is not None:  # nanoGPT's estimate_loss at this iteration (rank 0), before micro-step 1
                ev = {split: draws.eval_starts(step, split) for split in ("train", "val")}
                if ev["train"] is not None:
                    rec_step["eval"] = {k: v.tolist() for k, v in ev.items()}
            out.write(json.dumps(rec_step) + "\n")
        else:
            if args.documents:
                d = step_documents(tokens, plan, step)
                out.write(f"# step {step}: {d.rows_across} of {d.rows} rows read across a document boundary; "
                          f"{d.targets_after_eot} of {d.targets:,} targets follow <|endoftext|>\n")
            for r in rows:
                x = f"[{r.start:,}, {r.start + plan.N:,})"
                y = f"[{r.start + 1:,}, {r.start + plan.N + 1:,})"
                out.write(f"{step:>8} {epoch:>6} {r.rank:>4} {r.micro:>5} {r.row:>4} {x:>26} {y:>26}  "
                          f"{r.shard}+{r.shard_offset:,}\n")
                if args.tokens:
                    xy = gather_rows(tokens, [r.start], plan.N + 1)[0]
                    out.write(f"{'':>31}x: {' '.join(map(str, xy[:-1]))}\n{'':>31}y: {' '.join(map(str, xy[1:]))}\n")
    return 0


def _model_config(args: argparse.Namespace) -> ModelConfig:
    mc = MODEL_PRESETS[args.preset]
    over = {k: getattr(args, k) for k in ("n_layer", "n_head", "n_embd", "vocab_size", "dropout")
            if getattr(args, k) is not None}
    if args.model_block_size is not None:
        over["block_size"] = args.model_block_size
    if args.bias is not None:
        over["bias"] = args.bias == "true"
    return mc.with_(**over)


def _run_manifest(args: argparse.Namespace, corpus: Any, pc: PlanConfig, mc: ModelConfig, tc: TrainConfig,
                  world: int, resume_ckpt: Any):
    """run.json's manifest for this run (the trainer writes it once set up): a resumed run keeps its own and
    must be on its own corpus; a new one (or one resumed from a checkpoint that has no run.json) gets one."""
    from nanogpt_viz.run.record import check_corpus, is_run_dir, make_manifest, read_manifest

    if resume_ckpt is not None and is_run_dir(args.out):
        m = read_manifest(args.out)
        problem = check_corpus(m.corpus, corpus)
        if problem is not None:
            raise CliError(f"{problem} A resumed run continues on its own corpus; give {m.corpus.path}")
        m.notes.append(f"resumed at step {int(resume_ckpt.iter_num):,}")
        return m
    parent = None
    if resume_ckpt is not None:
        parent = {"checkpoint": str(Path(args.out).resolve() / "ckpt.pt"), "step": int(resume_ckpt.iter_num)}
    return make_manifest(args.out, corpus, args.split, pc, mc, tc, world_size=world, parent=parent,
                         history_budget=args.history_budget, val_fraction=args.val_fraction,
                         model_preset=args.preset)


def _resume_settings(args: argparse.Namespace, world: int):
    """Read OUT/ckpt.pt for --resume; N, B and K not given on the command line come from it.

    nanogpt-viz's own checkpoints hold the plan; nanoGPT's hold `block_size`, `batch_size` and the
    global `gradient_accumulation_steps` (over all ranks) in `config`. The model is always the
    checkpoint's (`model_args`): the weights fix it.
    """
    from nanogpt_viz.engine.checkpoint import load_checkpoint

    path = Path(args.out) / "ckpt.pt"
    if not path.exists():
        raise CliError(f"cannot resume: {path} does not exist")
    ckpt = load_checkpoint(path)
    plan = ckpt.extra.get("plan") if isinstance(ckpt.extra.get("plan"), dict) else {}
    config = ckpt.config
    # The weights fix the model: a model flag that asks for another one is a conflict, not a wish.
    model = ckpt.model_args
    saved_preset = ckpt.extra.get("model_preset")
    if args.preset is not None:
        want = MODEL_PRESETS[args.preset].with_(block_size=model["block_size"]).to_dict()
        differs = [k for k in ("n_layer", "n_head", "n_embd", "vocab_size", "bias", "dropout") if want[k] != model[k]]
        if differs:
            shape = ", ".join(f"{k}={model[k]}" for k in ("n_layer", "n_head", "n_embd"))
            raise CliError(f"--preset {args.preset} conflicts with the checkpoint's model "
                           f"({saved_preset + ': ' if isinstance(saved_preset, str) else ''}{shape}) in {path}; "
                           f"a resumed run keeps its model: leave --preset out (or train a new run in another "
                           f"--out directory)")
    for flag, key in (("--n-layer", "n_layer"), ("--n-head", "n_head"), ("--n-embd", "n_embd"),
                      ("--model-block-size", "block_size"), ("--vocab-size", "vocab_size"),
                      ("--dropout", "dropout")):
        given = getattr(args, key if key != "block_size" else "model_block_size")
        if given is not None and given != model[key]:
            raise CliError(f"{flag} {given} differs from the checkpoint's {key}={model[key]} in {path}; "
                           f"a resumed run keeps its model: leave {flag} out")
    if args.bias is not None and (args.bias == "true") != bool(model["bias"]):
        raise CliError(f"--bias {args.bias} differs from the checkpoint's bias={str(model['bias']).lower()} in "
                       f"{path}; a resumed run keeps its model: leave --bias out")
    if plan:  # ours: the plan is part of the run (the batches it reads next)
        for flag, key in (("-N", "block_size"), ("-B", "batch_size"), ("-K", "grad_accum"), ("-W", "world_size"),
                          ("--sampling", "sampling"), ("--stride", "stride"), ("--seed", "seed"),
                          ("--split", "split")):
            given = getattr(args, key)
            if given is not None and key in plan and given != plan[key] and not (
                    key == "stride" and plan.get("sampling") != "sliding"):
                raise CliError(f"{flag} {given} differs from the checkpoint's {key}={plan[key]} in {path}; a resumed "
                               f"run reads the batches its plan reads next: leave {flag} out")
        for key in ("sampling", "stride", "seed", "split", "world_size"):
            if getattr(args, key) is None and plan.get(key) is not None:
                setattr(args, key, plan[key])

    def whole(*values):  # the first whole number >= 1
        return next((v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 1), None)

    if args.block_size is None:
        args.block_size = (whole(plan.get("block_size"), config.get("block_size"))
                           or min(ckpt.model_args["block_size"], 64))
    if not plan and args.block_size > ckpt.model_args["block_size"]:  # (our own checkpoints keep their plan)
        raise CliError(f"N={args.block_size} is larger than the context of the checkpoint's model "
                       f"({ckpt.model_args['block_size']}); use -N {ckpt.model_args['block_size']} or less")
    if args.batch_size is None:
        args.batch_size = whole(plan.get("batch_size"), config.get("batch_size")) or 4
    if args.grad_accum is None and args.global_grad_accum is None:
        k = whole(plan.get("grad_accum"))
        gas = whole(config.get("gradient_accumulation_steps"))
        if k is None and gas is not None:
            if gas % world:
                raise CliError(f"the checkpoint's gradient_accumulation_steps={gas} (nanoGPT's, over all ranks) "
                               f"does not divide by the world size W={world}; give -K")
            k = gas // world
        args.grad_accum = k
    return ckpt


# train flags of the optimisation recipe -> TrainConfig fields (a resumed run keeps the checkpoint's unless given)
_RECIPE_FLAGS = (("lr", "learning_rate"), ("min_lr", "min_lr"), ("warmup_steps", "warmup_steps"),
                 ("lr_decay_steps", "lr_decay_steps"), ("weight_decay", "weight_decay"), ("grad_clip", "grad_clip"))


def cmd_train(args: argparse.Namespace) -> int:
    from nanogpt_viz.run.record import RunLog, format_eta, metric_record
    from nanogpt_viz.data.evaluation import default_protocol
    from nanogpt_viz.engine.trainer import DistInfo, EvalReport, RunEnd, RunInfo, StepReport, TrainControl, Trainer

    dist_info = DistInfo.from_env()
    if args.world_size is not None and dist_info.world_size > 1 and args.world_size != dist_info.world_size:
        raise CliError(f"--world-size {args.world_size} disagrees with torchrun's {dist_info.world_size} processes")
    world = dist_info.world_size if dist_info.world_size > 1 else (args.world_size or 1)
    if args.resume and args.out is None:
        raise CliError("--resume continues a run where it is: give its directory with --out RUN_DIR")
    if args.resume and args.overwrite:
        raise CliError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    resume_ckpt = _resume_settings(args, world) if args.resume else None
    if args.global_grad_accum is not None:
        if args.global_grad_accum % world:
            raise CliError(f"nanoGPT's global gradient_accumulation_steps={args.global_grad_accum} does not divide "
                           f"by the world size W={world}; choose a multiple of {world}")
        args.grad_accum = args.global_grad_accum // world
    if args.grad_accum is None:
        args.grad_accum = 1
    for key, default in (("sampling", "sequential"), ("stride", 1), ("split", "train")):
        if getattr(args, key) is None:
            setattr(args, key, default)
    if args.preset is None:
        args.preset = (resume_ckpt.extra.get("model_preset") if resume_ckpt is not None else None) or "tiny"
        if args.preset not in MODEL_PRESETS:
            args.preset = "tiny"
    # the recipe flags given (None: not given); on --resume these win over the checkpoint's, with a note
    recipe = {field: getattr(args, flag) for flag, field in _RECIPE_FLAGS if getattr(args, flag) is not None}
    mc = _model_config(args)
    if args.block_size is None:
        args.block_size = min(mc.block_size, 64)
    if args.model_block_size is None:  # one block size, as nanoGPT: the model's context is the plan's N
        mc = mc.with_(block_size=args.block_size)
    if args.batch_size is None:
        args.batch_size = 4
    pc = _plan_config(args, world_size=world)
    tc = TrainConfig(steps=args.steps, **recipe, eval_interval=args.eval_interval, eval_batches=args.eval_batches or 0,
                     eval_protocol=args.eval_protocol or default_protocol(args.sampling), device=args.device,
                     dtype=args.dtype, compile=args.compile, seed=DEFAULT_SEED if args.seed is None else args.seed, per_token=args.per_token,
                     checkpoint_interval=args.checkpoint_interval, residual_dtype=args.residual_dtype,
                     divide_by_k=args.divide_by_k)
    for problems in (pc.problems(), mc.problems(), tc.problems()):
        if problems:
            raise CliError("; ".join(problems))
    if args.resume and not (Path(args.out) / "ckpt.pt").exists():
        raise CliError(f"cannot resume: {Path(args.out) / 'ckpt.pt'} does not exist")
    if args.out is not None:  # refused before anything is read or written: nothing of the run there is lost
        from nanogpt_viz.run.record import prepare_run_dir

        prepare_run_dir(args.out, resume=args.resume, overwrite=args.overwrite, clear=dist_info.is_master)
    corpus = _open(args.corpus, args.val_fraction, args.accept_undecodable) if dist_info.is_master else None
    if corpus is None:  # other ranks: the master has built any cache; opening is then instant
        from nanogpt_viz.data.corpus import open_corpus
        corpus = open_corpus(args.corpus, val_fraction=args.val_fraction, accept_undecodable=args.accept_undecodable)
    train_tokens = corpus.split(args.split)
    val_tokens = corpus.split("val") if corpus.has_split("val") and args.split == "train" else None

    if dist_info.world_size > 1:
        import torch
        import torch.distributed as tdist

        backend = "nccl" if torch.cuda.is_available() and args.device in ("auto", "cuda") else "gloo"
        tdist.init_process_group(backend=backend)
    if args.out is None:  # a fresh run directory, runs/<timestamp>-<corpus>: rank 0 names it for every rank
        from nanogpt_viz.run.record import new_run_dir

        out = str(new_run_dir(RUNS_ROOT, corpus.name)) if dist_info.is_master else None
        if dist_info.world_size > 1:
            box = [out]
            dev = None
            if backend == "nccl":
                torch.cuda.set_device(dist_info.local_rank)
                dev = torch.device("cuda", dist_info.local_rank)
            tdist.broadcast_object_list(box, src=0, device=dev)
            out = box[0]
        args.out = out
        if dist_info.is_master:
            sys.stderr.write(f"run directory: {out}\n")
    manifest = _run_manifest(args, corpus, pc, mc, tc, world, resume_ckpt) if dist_info.is_master else None
    control = TrainControl()

    first_signal = [0.0]

    def on_signal(signum, frame):  # first Ctrl+C / SIGTERM: stop after this step, write the checkpoint
        now = time.monotonic()
        if control.stopped:
            # a second Ctrl+C aborts; torchrun's SIGTERM right after a group-wide SIGINT does not
            if signum == signal.SIGINT and now - first_signal[0] > 1.0:
                raise KeyboardInterrupt
            return
        first_signal[0] = now
        control.stop()
        if dist_info.is_master:
            sys.stderr.write("\nstopping after this step (Ctrl+C again to abort without a checkpoint)\n")

    # A launcher (the window) asks every rank to stop by creating OUT/stop-request: each rank sees it
    # within half a second and the stop flag is agreed through the per-step all-reduce.
    stop_file = Path(args.out) / STOP_REQUEST
    started = time.time()

    def watch_stop_file() -> None:
        while not control.stopped:
            try:
                if stop_file.stat().st_mtime >= started - 1.0:
                    control.stop()
                    return
            except OSError:
                pass
            time.sleep(0.5)

    threading.Thread(target=watch_stop_file, name="stop-file-watch", daemon=True).start()
    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    trainer = Trainer(train_tokens, val_tokens, pc, mc, tc, out_dir=args.out, resume=args.resume,
                      control=control, dist=dist_info, model_preset=args.preset, resume_checkpoint=resume_ckpt,
                      train_overrides=recipe,
                      corpus_info={"path": str(Path(args.corpus).resolve()), "name": corpus.name,
                                   "tokens": len(train_tokens), "vocab_size": corpus.vocab_size})
    trainer.manifest, trainer.history_budget = manifest, args.history_budget  # run.json and history/
    log = RunLog(args.out) if dist_info.is_master else None
    master = dist_info.is_master
    code = 0
    t0 = time.monotonic()
    first_step = 0
    init_eval: EvalReport | None = None
    try:
        for ev in trainer.run():
            if isinstance(ev, RunInfo):
                first_step = ev.start_step
                if log:
                    log.status("running", step=ev.start_step, total_steps=ev.total_steps, device=ev.device_name,
                               world_size=ev.world_size, n_params=ev.n_params)
                if master and not args.json:
                    how = ev.dtype + (", bf16 residual" if ev.residual_dtype == "bfloat16" else "") + (
                        ", compiled" if ev.compiled else "")
                    sys.stderr.write(f"training on {ev.device_name} ({how}), "
                                     f"{ev.n_params / 1e6:.2f}M parameters, {ev.tokens_per_step:,} tokens/step, "
                                     f"steps {ev.start_step}..{ev.total_steps - 1}\n")
                    for note in ev.notes:
                        sys.stderr.write(f"note: {note}\n")
            elif isinstance(ev, EvalReport):  # iteration 0, before any step: rides on the next record
                init_eval = ev
                if master and not args.json:
                    est = f", train estimate {ev.train_loss_est:.4f}" if ev.train_loss_est is not None else ""
                    sys.stderr.write(f"step 0: val {ev.val_loss:.4f}{est} ({ev.val_protocol} protocol, "
                                     f"{ev.val_tokens:,} val targets)\n")
            elif isinstance(ev, StepReport):
                rec = metric_record(ev, init_eval)
                init_eval = None
                if log:
                    log.metric(rec)
                    if ev.step % 10 == 0 or ev.val_loss is not None:
                        log.status("running", step=ev.step + 1, total_steps=tc.steps, loss=ev.loss)
                if not master:
                    continue
                if args.json:
                    sys.stdout.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                                 for k, v in rec.items()}) + "\n")
                    sys.stdout.flush()
                else:
                    done = ev.step + 1 - first_step
                    elapsed = time.monotonic() - t0
                    eta = elapsed / done * (tc.steps - ev.step - 1) if done else float("nan")
                    width = 24
                    filled = int(width * (ev.step + 1) / tc.steps)
                    val = f" val {ev.val_loss:.4f}" if ev.val_loss is not None else ""
                    if ev.train_loss_est is not None:
                        val += f" (train est {ev.train_loss_est:.4f})"
                    mfu = f" mfu {100 * ev.mfu:.1f}%" if ev.mfu is not None else ""
                    if ev.mfu_datasheet is not None and ev.mfu_datasheet != ev.mfu:
                        mfu += f" ({100 * ev.mfu_datasheet:.1f}% of datasheet)"
                    line = (f"[{'#' * filled}{'.' * (width - filled)}] step {ev.step + 1}/{tc.steps} "
                            f"loss {ev.loss:.4f}{val} | {ev.tokens_per_s:,.0f} tok/s{mfu} | ETA {format_eta(eta)}")
                    if sys.stderr.isatty():
                        sys.stderr.write("\r" + line.ljust(100))
                        if ev.val_loss is not None:
                            sys.stderr.write("\n")
                    elif ev.val_loss is not None or ev.step % 10 == 0 or ev.step + 1 == tc.steps:
                        sys.stderr.write(line + "\n")
                    sys.stderr.flush()
            elif isinstance(ev, RunEnd):
                if log:
                    log.status(ev.reason, step=ev.step, total_steps=tc.steps, message=ev.message,
                               checkpoint=ev.checkpoint)
                if master:
                    if sys.stderr.isatty() and not args.json:
                        sys.stderr.write("\n")
                    if ev.reason in ("finished", "stopped"):
                        sys.stderr.write(f"{ev.message}" + (f"; checkpoint: {ev.checkpoint}" if ev.checkpoint else "")
                                         + "\n")
                    else:
                        sys.stderr.write(f"error: {ev.message}\n")
                code = 0 if ev.reason in ("finished", "stopped") else 1
                if ev.reason == "error" and ev.step == 0:
                    code = EXIT_USAGE
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        if log:
            log.close()
        if dist_info.world_size > 1:
            import gc

            import torch.distributed as tdist

            if tdist.is_initialized():
                if code == 0:
                    # leave together: a rank that tears its process group down while rank 0 still
                    # writes the checkpoint can abort in the collective library at exit
                    try:
                        tdist.barrier()
                    except Exception:
                        pass
                trainer = None  # its DDP model holds the process group: let it go here, not at exit
                gc.collect()
                tdist.destroy_process_group()
    if dist_info.world_size > 1:
        # Everything is written (checkpoint, history, metrics, status) and closed. A rank that went on into
        # the interpreter's teardown aborted there in 2 of 61 stopped CPU runs under load ("terminate called
        # without an active exception", no Python frame left: a C++ destructor of the collective library),
        # and torchrun then reported the whole job failed. The rank's exit code is its result.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def cmd_sample(args: argparse.Namespace) -> int:
    from nanogpt_viz.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from nanogpt_viz.data.tokenizer import decode, encode
    from nanogpt_viz.engine.trainer import detect_device, sample_text

    prompt = args.prompt
    if "\\" in prompt:  # `--prompt 'To be\n'`: escapes; non-ASCII text survives (backslashreplace)
        try:
            prompt = prompt.encode("latin-1", "backslashreplace").decode("unicode_escape")
        except UnicodeDecodeError as exc:
            raise CliError(f"--prompt has a malformed escape sequence ({exc.reason}); "
                           f"write a literal backslash as \\\\") from None
    path = Path(args.dir)
    if path.is_dir():
        path = path / "ckpt.pt"
    if not path.exists():
        raise CliError(f"{path}: no checkpoint there (train first, or point at a run directory)")
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    device, _ = detect_device(args.device)
    model.to(device)
    ids = encode(prompt)
    out = sample_text(model, ids, args.tokens, temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    sys.stdout.write(prompt + decode(out) + "\n")
    return 0


def cmd_topk(args: argparse.Namespace) -> int:
    from nanogpt_viz.data.tokenizer import decode, display_text as display_token
    from nanogpt_viz.engine.checkpoint import model_from_checkpoint
    from nanogpt_viz.engine.topk import top_k_at
    from nanogpt_viz.engine.trainer import detect_device

    corpus = _open(args.corpus)
    tokens = corpus.split(args.split)
    model = model_from_checkpoint(args.dir)
    device, _ = detect_device(args.device)
    model.to(device)
    try:
        res = top_k_at(model, tokens, args.offset, k=args.top, context_start=args.context_start)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(res.to_dict(decode)))
        return 0
    ctx = tokens[max(res.context_start, res.position - 12):res.position + 1]
    print(f"t[{res.position:,}] after …{''.join(display_token(int(i)) for i in ctx)} "
          f"(context t[{res.context_start:,}..{res.position:,}], {res.position - res.context_start + 1:,} tokens)")
    print(f"target t[{res.position + 1:,}] = {display_token(res.target)!s}: rank {res.target_rank:,}, "
          f"p = {res.target_prob:.4f}, loss = {res.target_loss:.4f} nats")
    for n, (i, p) in enumerate(zip(res.ids, res.probs), 1):
        mark = "  <- target" if int(i) == res.target else ""
        print(f"{n:>3}. {p:8.4f}  {display_token(int(i))}{mark}")
    return 0


# Debian package -> the library Qt's xcb platform plugin loads (without it Qt aborts with exit 134)
_XCB_LIBRARIES = (("libxcb-cursor0", "xcb-cursor"),)


def missing_window_libraries(find=None) -> list[str]:
    """Debian packages Qt's X11 plugin needs that this Linux machine lacks ([] elsewhere or under Wayland)."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux") or (platform and not platform.startswith("xcb")):
        return []
    if not platform and os.environ.get("WAYLAND_DISPLAY"):
        return []
    if find is None:
        import ctypes.util
        find = ctypes.util.find_library
    return [pkg for pkg, lib in _XCB_LIBRARIES if find(lib) is None]


def cmd_gui(args: argparse.Namespace) -> int:
    if (sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
        raise CliError("no display to open the window on (DISPLAY is not set); run it on a desktop, or use the "
                       "subcommands: nanogpt-viz plan / train / prepare / sample")
    missing = missing_window_libraries()
    if missing:
        raise CliError(f"the window needs the system librar{'y' if len(missing) == 1 else 'ies'} "
                       f"{', '.join(missing)} (Qt on X11); install with: sudo apt-get install {' '.join(missing)}")
    if args.corpus is not None:
        from nanogpt_viz.data.corpus import path_problem

        problem = path_problem(args.corpus)
        if problem:
            raise CliError(problem)
    run_dir = None
    if args.corpus is not None and os.path.isfile(os.path.join(args.corpus, "run.json")):
        from nanogpt_viz.run.record import read_manifest

        read_manifest(args.corpus)  # a damaged run.json is one error line here, not a dialog later
        run_dir, args.corpus = args.corpus, None  # a run directory: the window opens the run (and its corpus)
    try:
        from nanogpt_viz.ui.app import run_app
    except ImportError as exc:
        raise CliError(f"the window needs PySide6 and pyqtgraph ({exc}); install them with "
                       f"`pip install nanogpt-viz` or use the subcommands") from None
    if run_dir is not None:
        return run_app(corpus=None, run_dir=run_dir)
    return run_app(args.corpus)


# The engine's user-facing error classes. Looked up only in modules the command has already
# imported (an error class of a module never imported cannot have been raised), so that `plan`
# and `prepare` never pay for importing torch just to name CheckpointError / TrainError.
_ERROR_CLASSES = (("nanogpt_viz.run.record", "RunError"), ("nanogpt_viz.data.batching", "PlanError"), ("nanogpt_viz.data.corpus", "CorpusError"),
                  ("nanogpt_viz.data.corpus", "Cancelled"), ("nanogpt_viz.engine.checkpoint", "CheckpointError"),
                  ("nanogpt_viz.data.tokenizer", "TokenizerError"), ("nanogpt_viz.engine.trainer", "TrainError"))


def _known_errors() -> tuple[type[BaseException], ...]:
    known: list[type[BaseException]] = [CliError]
    for module, name in _ERROR_CLASSES:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            known.append(cls)
    return tuple(known)


def main(argv: Sequence[str] | None = None) -> int:
    from nanogpt_viz.engine.runtime import tune_allocator

    tune_allocator()  # before the engine allocates anything (see runtime.py)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["gui", *argv]
    if argv[0] == "--version":
        from nanogpt_viz import __version__

        print(f"nanogpt-viz {__version__}")
        return 0
    args = build_parser().parse_args(argv)
    handlers = {"gui": cmd_gui, "prepare": cmd_prepare, "plan": cmd_plan, "train": cmd_train, "sample": cmd_sample,
                "topk": cmd_topk}
    try:
        return handlers[args.command](args)
    except _known_errors() as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except BrokenPipeError:  # `nanogpt-viz plan ... | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except MemoryError:
        sys.stderr.write("error: out of memory; use a smaller corpus, batch or model\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
