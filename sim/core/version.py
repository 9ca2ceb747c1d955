"""The package version (also ``sim.__version__``), here so that library code that records it
(sweep point keys, ``sovsim --version``) need not import the package root, which sits on top."""

VERSION = "0.1.0"
