"""Demand: length distributions, arrival processes, fitted laws, trace replay and the verticals."""
