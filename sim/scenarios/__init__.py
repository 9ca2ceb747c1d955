"""Scenarios shipped inside the package (TOML). ``default.toml`` (the 36-month forecast) is what ``sovsim run`` runs; ``day.toml`` is one day of Mixtral traffic."""
