"""bench/ is a pytest-benchmark suite: `pytest bench/ --benchmark-autosave`, then
`--benchmark-compare` / `--benchmark-compare-fail=median:10%` against the saved runs."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
