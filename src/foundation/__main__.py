"""``python -m foundation``: hands the arguments to the command line, :mod:`foundation._cli`."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
