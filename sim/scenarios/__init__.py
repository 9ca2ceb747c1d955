"""Scenarios shipped inside the package (TOML). ``default.toml`` is what ``sovsim run`` runs."""
