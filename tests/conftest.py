import sys
from pathlib import Path

# tests import their shared helpers (queueing.py) by name
sys.path.insert(0, str(Path(__file__).parent))
