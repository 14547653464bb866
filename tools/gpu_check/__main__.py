"""``python -m tools.gpu_check``: run the GPU acceptance check (see the package docstring)."""

import sys

from tools.gpu_check.cli import main

sys.exit(main())
