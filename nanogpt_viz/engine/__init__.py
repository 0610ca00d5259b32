"""The engine: GPT-2 as nanoGPT defines it, its kernels, the trainer and checkpoints (no Qt)."""
