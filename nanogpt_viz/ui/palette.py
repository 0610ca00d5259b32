"""Colours shared by every view, so a step, a rank or a loss looks the same everywhere."""
from __future__ import annotations

import numpy as np
from PySide6.QtGui import QColor

# Twelve well-separated hues (light enough for dark text on top); step k uses STEP_HUES[k % 12].
_STEP_HEX = ["#8ecae6", "#ffb703", "#90be6d", "#f4a6a6", "#b8a1e3", "#f9c74f",
             "#80cbc4", "#ffab91", "#a5d6a7", "#ce93d8", "#bcaaa4", "#9fa8da"]
STEP_COLORS = [QColor(h) for h in _STEP_HEX]
# Ranks: saturated colours for outlines / underlines / row bands.
_RANK_HEX = ["#1d3557", "#e63946", "#2a9d8f", "#f4a261", "#6a4c93", "#3a86ff", "#8d6e63", "#43aa8b"]
RANK_COLORS = [QColor(h) for h in _RANK_HEX]
UNUSED = QColor("#d0d0d0")  # read by no step (dropped tail, not sampled)
UNUSED_TEXT = QColor("#8a8a8a")
TEXT = QColor("#1b1b1b")
CURRENT_OUTLINE = QColor("#d00000")
TARGET_ONLY = QColor("#ffe066")
BACKGROUND = QColor("#fafafa")


def step_color(step: int) -> QColor:
    if step < 0:
        return UNUSED
    return STEP_COLORS[int(step) % len(STEP_COLORS)]


def rank_color(rank: int) -> QColor:
    return RANK_COLORS[int(rank) % len(RANK_COLORS)]


def step_rgb_table() -> np.ndarray:
    """(12, 3) uint8 RGB of the step hues, for vectorised image building (overview)."""
    return np.array([[c.red(), c.green(), c.blue()] for c in STEP_COLORS], dtype=np.uint8)


# A perceptual-ish ramp for losses (low: pale yellow -> high: deep purple), 256 entries.
_LOSS_STOPS = np.array([[255, 255, 204], [254, 217, 118], [253, 141, 60], [227, 26, 28], [128, 0, 38],
                        [63, 0, 90]], dtype=np.float64)


def loss_lut(n: int = 256) -> np.ndarray:
    x = np.linspace(0, len(_LOSS_STOPS) - 1, n)
    i = np.minimum(x.astype(int), len(_LOSS_STOPS) - 2)
    f = (x - i)[:, None]
    return ((1 - f) * _LOSS_STOPS[i] + f * _LOSS_STOPS[i + 1]).astype(np.uint8)


_LUT = loss_lut()


def loss_color(value: float, vmin: float, vmax: float) -> QColor:
    if not np.isfinite(value):
        return UNUSED
    t = 0.0 if vmax <= vmin else (value - vmin) / (vmax - vmin)
    r, g, b = _LUT[int(np.clip(t, 0.0, 1.0) * 255)]
    return QColor(int(r), int(g), int(b))


def coverage_color(count: int, max_count: int) -> QColor:
    """0: grey; then a green ramp, darker for more visits."""
    if count <= 0:
        return UNUSED
    t = min(1.0, count / max(1, max_count))
    return QColor(int(220 - 150 * t), int(240 - 90 * t), int(200 - 140 * t))
