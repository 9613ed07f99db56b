"""``python -m recsys.cli``: the command line without the console script."""

import sys

from recsys.cli import main

sys.exit(main())
