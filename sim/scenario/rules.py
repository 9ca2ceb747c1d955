"""The one-line refusal of a cross-field rule, shared by the scenario schema and its market block."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

RULE = "scenario_rule"


def fail(field: str, what: str, allowed: str):
    """Raise inside a model validator: ``field`` (relative to the model whose validator raises,
    e.g. ``tp`` or ``step_time.kv_cache_tokens``) is wrong because of ``what``; ``allowed``
    says what is accepted.  The schema's error formatter prefixes the model's location."""
    raise PydanticCustomError(RULE, "{field}: {what}; allowed: {allowed}",
                              {"field": field, "what": what, "allowed": allowed})


class StrictSpec(BaseModel):
    """Base of the scenario's market blocks: unknown fields are errors; numbers are finite and
    strict (no string or boolean is converted; an integer is accepted where a float is expected)."""
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
