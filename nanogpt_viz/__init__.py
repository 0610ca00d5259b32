"""nanogpt-viz: see how GPT-2 / nanoGPT training cuts batches out of a corpus, then train on them."""

__version__ = "0.1.0"
