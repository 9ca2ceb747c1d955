"""The ``sovsim`` command line: parse arguments, call the library, print.  Nothing imports it."""
from sim.cli.app import main

__all__ = ["main"]
