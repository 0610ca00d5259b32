"""Triton kernels of the engine, each registered only where it can run.

This module owns the one Triton import guard: `triton` is the module where it imports (the CUDA builds
of torch bring it), None elsewhere; every kernel file takes it from here.
"""
from __future__ import annotations

try:  # Triton comes with the CUDA builds of torch; the CPU build has none
    import triton
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

__all__ = ["triton"]
