"""`python -m cervicontour.cli ...` (and `torchrun ... -m cervicontour.cli ...`) runs the command line."""

import sys

from cervicontour.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
