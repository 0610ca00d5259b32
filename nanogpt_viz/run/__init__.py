"""The run record: a run directory's files, the per-token loss history, torchrun launch (no Qt)."""
