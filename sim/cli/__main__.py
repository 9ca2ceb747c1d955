"""``python -m sim.cli``: the same as ``sovsim``."""
import sys

from sim.cli.app import main

sys.exit(main())
