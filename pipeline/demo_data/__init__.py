"""The embedded demo data: a mini CamSDD of real photos and a candidate pool.

See README.md in this folder; ``regenerate.py`` rebuilds it from packages.
"""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
#: A CamSDD root: training/, validation/ and test/ class folders at 576x384.
CAMSDD_ROOT = DEMO_DIR / "CamSDD"
#: Photos not in the labeled splits, with candidates.csv and truth.csv.
CANDIDATES_DIR = DEMO_DIR / "candidates"
