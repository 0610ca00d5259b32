"""The engine and the command line never pull in Qt; `plan` does not even need torch.

Each check runs a fresh interpreter, so modules imported by other tests in this process cannot hide
(or fake) an import.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import numpy as np

from nanogpt_viz.data.corpus import write_nanogpt_bin

QT_PREFIXES = ("PySide6", "pyqtgraph", "shiboken")
PURE_MODULES = ("nanogpt_viz.config", "nanogpt_viz.data.tokenizer", "nanogpt_viz.data.corpus", "nanogpt_viz.data.batching",
                "nanogpt_viz.engine.model", "nanogpt_viz.engine.trainer", "nanogpt_viz.engine.checkpoint", "nanogpt_viz.viewmodel",
                "nanogpt_viz.run.record", "nanogpt_viz.cli", "nanogpt_viz.engine.kernels.fused_loss", "nanogpt_viz.engine.kernels.gelu", "nanogpt_viz.run.launch",
                "nanogpt_viz.engine.runtime")


def _run(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NANOGPT_VIZ_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def _last_list(res: subprocess.CompletedProcess) -> list:
    assert res.returncode == 0, res.stderr[-3000:]
    return ast.literal_eval(res.stdout.strip().splitlines()[-1])


def test_engine_modules_do_not_import_qt(tmp_path):
    code = (f"import {', '.join(PURE_MODULES)}; import sys; "
            f"print([m for m in sys.modules if m.startswith({QT_PREFIXES!r})])")
    res = _run(code, tmp_path)
    assert _last_list(res) == []
    # the check itself can see Qt: importing the window package does put it in sys.modules
    res = _run(f"import nanogpt_viz.ui.app, sys; print([m for m in sys.modules if m.startswith({QT_PREFIXES!r})])",
               tmp_path)
    assert any(m.startswith("PySide6") for m in _last_list(res))


def test_plan_through_the_cli_imports_neither_qt_nor_torch(tmp_path):
    corpus = tmp_path / "tokens.bin"
    write_nanogpt_bin(corpus, np.arange(5000) % 50257)
    code = (
        "import sys, io, contextlib\n"
        "from nanogpt_viz.cli import main\n"
        "buf = io.StringIO()\n"
        f"with contextlib.redirect_stdout(buf):\n"
        f"    rc = main(['plan', {str(corpus)!r}, '-N', '64', '-B', '4', '--steps', '2', '--json', '--tokens'])\n"
        "assert rc == 0, rc\n"
        "assert buf.getvalue().count('\\n') == 2, buf.getvalue()[:200]\n"
        f"print([m for m in sys.modules if m.startswith({QT_PREFIXES!r}) or m == 'torch' or m.startswith('torch.')])\n"
    )
    res = _run(code, tmp_path)
    assert _last_list(res) == []


def test_plan_errors_are_still_reported_without_torch(tmp_path):
    # the error handler only knows the error classes of modules already imported; a corpus error in
    # `plan` must still be one `error:` line with exit 2, and torch must still stay out
    bad = tmp_path / "odd.bin"
    bad.write_bytes(b"\x01\x02\x03")
    code = (
        "import sys\n"
        "from nanogpt_viz.cli import main\n"
        f"rc = main(['plan', {str(bad)!r}, '-N', '8', '-B', '1'])\n"
        "print(rc)\n"
        "print(['torch'] if 'torch' in sys.modules else [])\n"
    )
    res = _run(code, tmp_path)
    assert _last_list(res) == []
    assert res.stdout.strip().splitlines()[-2] == "2"
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
