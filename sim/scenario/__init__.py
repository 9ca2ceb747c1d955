"""The scenario layer: the typed, validated scenario schema (:mod:`sim.scenario.schema`) and the
market's part of it (:mod:`sim.scenario.market`)."""
from sim.scenario.schema import (BatchingSpec, DeploymentSpec, ResidencySpec, Scenario, ScenarioError, SiteSpec,
                                 WorkloadSpec, load_scenario, resolved_config, scenario_from_dict, with_overrides)

__all__ = ["BatchingSpec", "DeploymentSpec", "ResidencySpec", "Scenario", "ScenarioError", "SiteSpec",
           "WorkloadSpec", "load_scenario", "resolved_config", "scenario_from_dict", "with_overrides"]
