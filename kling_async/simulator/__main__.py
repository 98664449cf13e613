"""``python -m kling_async.simulator``: run the simulator stand-alone."""

import sys

from ._serve import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
