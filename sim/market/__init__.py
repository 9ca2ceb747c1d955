"""The customer market: RFPs, buyer choice against competitors, contracts with buyers."""
