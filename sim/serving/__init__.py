"""Serving: the engine (continuous batching), the router, metrics, the world, residency and fluid capacity. Knows nothing of money."""
