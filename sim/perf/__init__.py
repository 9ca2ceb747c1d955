"""Step time: the engine's step-time interface (:mod:`sim.perf.step`), the calibrated roofline model and the GPU/LLM catalog."""
