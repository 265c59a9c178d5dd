#!/usr/bin/env python
"""Train lesion-segmentation with the flags of `brain-tf lesion-segmentation train`.

The first argument may also be `evaluate` or `predict`, followed by that
action's flags (see --help).
"""

from _entry import run

if __name__ == "__main__":
    run("lesion-segmentation")
