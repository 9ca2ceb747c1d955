"""Studies: one run, sweeps, capacity search, throughput, statistics, reports and figures."""
