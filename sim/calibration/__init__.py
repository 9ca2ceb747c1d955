"""Calibration: fitting the step-time model and the demand laws to measurements, and scoring them."""
