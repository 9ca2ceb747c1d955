"""sovsim: a discrete-event simulation of a sovereign European AI inference cloud."""
__version__ = "0.1.0"
