"""The multi-year forecast: market continuous, traffic in sampled windows, money on the ledger."""
