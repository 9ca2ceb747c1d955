"""The sovsim catalog: data only (GPU cards, LLM cards, measurements, fitted parameters).

Installed as the package ``sim.models`` so that ``importlib.resources`` finds it whether
sovsim is installed editable or not; see ``models/README.md``.
"""
