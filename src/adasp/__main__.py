"""``python -m adasp`` runs the command line."""

import sys

from adasp.cli import main

if __name__ == "__main__":
    sys.exit(main())
