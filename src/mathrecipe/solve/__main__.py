"""``python -m mathrecipe.solve ARGS`` = ``mathrecipe solve ARGS``."""

import sys

from mathrecipe.solve.cli import main

sys.exit(main())
