"""``python -m needle``: the needle command line."""

import sys

from .cli import main

sys.exit(main())
