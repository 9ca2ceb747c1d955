"""Economics: capacity contracts, the ledger, faults and capacity policies, attached to a world by :mod:`sim.economics.attach`."""
