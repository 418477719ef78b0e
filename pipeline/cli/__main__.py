"""``python -m pipeline.cli …`` is ``camsdd …``."""

import sys

from pipeline.cli import main

sys.exit(main())
