"""Launch the nanogpt-viz window (same as `nanogpt-viz` with no arguments)."""
import sys

from nanogpt_viz.cli import main

if __name__ == "__main__":
    sys.exit(main(["gui", *sys.argv[1:]]))
