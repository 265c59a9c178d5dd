#!/usr/bin/env python
"""Train slice-classification with the flags of `brain-tf slice-classification train`.

The first argument may also be `evaluate` or `predict`, followed by that
action's flags (see --help).
"""

from _entry import run

if __name__ == "__main__":
    run("slice-classification")
