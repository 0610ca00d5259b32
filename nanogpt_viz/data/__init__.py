"""Data: GPT-2 BPE, token files and corpora, the batch plan and the real loaders it reproduces."""
