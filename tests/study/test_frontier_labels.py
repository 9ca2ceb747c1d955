"""The frontier panel labels each distinct point once: coinciding points (users past the
running-sequence cap) share one "first-last" label instead of printing over each other."""
from __future__ import annotations

import doctest

import pandas as pd

import sim.study.frontier as frontier


def test_point_labels_doctest():
    r = doctest.testmod(frontier)
    assert r.attempted >= 1 and r.failed == 0


def test_coinciding_points_share_one_label_and_distinct_ones_keep_theirs():
    m = pd.DataFrame({"load": [1, 2, 256, 384, 512, 600],
                      "tok_s_per_user": [100.0, 88.0, 40.0, 40.0, 40.0, 30.0],
                      "output_tok_s_per_gpu": [50.0, 90.0, 4880.0, 4880.0, 4880.0, 4900.0]})
    assert [t for t, _, _ in frontier.point_labels(m)] == ["1", "2", "256-512", "600"]
