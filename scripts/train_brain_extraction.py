#!/usr/bin/env python
"""Train brain-extraction with the flags of `brain-tf brain-extraction train`.

The first argument may also be `evaluate` or `predict`, followed by that
action's flags (see --help).
"""

from _entry import run

if __name__ == "__main__":
    run("brain-extraction")
