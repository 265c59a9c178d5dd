#!/usr/bin/env python
"""Train age-regression with the flags of `brain-tf age-regression train`.

The first argument may also be `evaluate` or `predict`, followed by that
action's flags (see --help).
"""

from _entry import run

if __name__ == "__main__":
    run("age-regression")
