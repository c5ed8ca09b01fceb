"""``python -m levent.bench``: the same as ``python -m levent bench``."""
import sys

from .cli import main

sys.exit(main())
