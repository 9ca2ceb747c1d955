"""JSON encoding shared by every writer of results."""
from __future__ import annotations

import math


def json_default(o):
    """``json.dumps(default=...)`` for numpy scalars; non-finite floats become ``null``."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")
