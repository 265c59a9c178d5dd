#!/usr/bin/env python
"""Train hippocampus-segmentation with the flags of `brain-tf hippocampus-segmentation train`.

The first argument may also be `evaluate` or `predict`, followed by that
action's flags (see --help).
"""

from _entry import run

if __name__ == "__main__":
    run("hippocampus-segmentation")
