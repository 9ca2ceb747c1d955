"""Sovereignty is an invariant: a request is only ever placed on a replica at a site its
residency rule allows -- under random sites, rules and replica failures."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.serving.engine import Replica
from sim.serving.world import World
from sim.serving.residency import site_allows
from sim.scenario import scenario_from_dict

JURIS = ["FR", "DE", "NL", "IT"]
CERTS = ["SecNumCloud", "BSI-C5", "HDS", "ISO27001"]


@st.composite
def worlds(draw):
    n_sites = draw(st.integers(1, 4))
    sites = [{"name": f"s{i}", "jurisdiction": draw(st.sampled_from(JURIS)),
              "certifications": draw(st.lists(st.sampled_from(CERTS), unique=True, max_size=3)),
              "network_latency_s": {"eu": draw(st.floats(0.0, 0.03))}}
             for i in range(n_sites)]
    deps = [{"name": f"d{i}", "model": "m", "site": f"s{draw(st.integers(0, n_sites - 1))}",
             "replicas": draw(st.integers(1, 3)),
             "batching": {"max_num_seqs": 8, "max_batched_tokens": 512},
             "step_time": {"kind": "constant", "decode_step_s": 0.02, "prefill_per_token_s": 1e-4,
                           "kv_cache_tokens": 6000}}
            for i in range(draw(st.integers(1, 4)))]
    wls = []
    for i in range(draw(st.integers(1, 4))):
        allowed = draw(st.one_of(st.none(), st.lists(st.sampled_from(JURIS), unique=True, min_size=1)))
        wls.append({"name": f"w{i}", "model": "m", "vertical": draw(st.sampled_from(
                        ["finance", "healthcare", "public_sector", "general"])),
                    "arrivals": {"kind": "poisson", "rate_per_s": draw(st.floats(0.5, 4.0))},
                    "prompt_tokens": {"dist": "uniform", "low": 10, "high": 400},
                    "output_tokens": {"dist": "geometric", "mean": 40},
                    "residency": {"allowed_jurisdictions": allowed,
                                  "required_certifications": draw(st.lists(st.sampled_from(CERTS),
                                                                           unique=True, max_size=2))}})
    policy = draw(st.sampled_from(["least_outstanding", "power_of_two", "round_robin", "central_queue"]))
    data = {"name": "residency", "simulation": {"horizon_s": 150.0, "request_sample_size": 100000},
            "router": {"policy": policy, "max_wait_s": draw(st.floats(0.0, 30.0))},
            "sites": sites, "deployments": deps, "workloads": wls}
    failures = draw(st.lists(st.tuples(st.floats(1.0, 140.0), st.integers(0, 11), st.floats(1.0, 60.0)),
                             max_size=6))
    return scenario_from_dict(data), failures, draw(st.integers(0, 1000)), draw(st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_no_residency_violation_under_failures(case):
    scenario, failures, seed, keep = case
    sites = {s.name: s for s in scenario.sites}
    placements = []
    world = World(scenario, seed)
    orig = Replica.enqueue

    def spy(self, r):
        placements.append((r.workload, self.index))
        return orig(self, r)

    for rep in world.replicas:
        rep.enqueue = spy.__get__(rep)
    n = len(world.replicas)

    def injector(env):
        for t, idx, down_s in sorted(failures):
            if t > env.now:
                yield env.timeout(t - env.now)
            world.fail_replica(idx % n, keep_generated=keep)
            env.process(repair(env, idx % n, down_s))

    def repair(env, idx, down_s):
        yield env.timeout(down_s)
        world.repair_replica(idx)

    world.env.process(injector(world.env))
    world.run()
    s = world.summary()
    # every placement, including requeues after failures, checked against the rule itself
    for wi, ri in placements:
        dep = scenario.deployments[world.replicas[ri].deployment]
        assert site_allows(sites[dep.site], scenario.workloads[wi].residency), (wi, ri)
    assert s["residency_violations"] == 0
    # no request lost across failures
    assert s["arrivals"] == s["completed"] + s["rejected"] + s["in_flight"]
    assert s["in_flight"] == len(world.in_flight())
    # a workload with no eligible replica at all is rejected, never served
    for wi, w in enumerate(scenario.workloads):
        if not world.eligible[wi]:
            assert s["workloads"][w.name]["completed"] == 0


def test_rule_semantics():
    from sim.scenario import ResidencySpec, SiteSpec
    fr = SiteSpec(name="par", jurisdiction="FR", certifications=["SecNumCloud", "HDS"])
    de = SiteSpec(name="fra", jurisdiction="DE", certifications=["BSI-C5"])
    hds_fr = ResidencySpec(allowed_jurisdictions=["FR"], required_certifications=["HDS"])
    assert site_allows(fr, hds_fr) and not site_allows(de, hds_fr)
    assert site_allows(de, ResidencySpec())
    assert not site_allows(None, ResidencySpec(allowed_jurisdictions=["FR"]))
    assert not site_allows(fr, ResidencySpec(required_certifications=["BSI-C5"]))
