"""``python -m mathrecipe.solve ARGS`` = ``mathrecipe solve ARGS`` (the one ``mathrecipe`` main)."""

import sys

from mathrecipe.cli import main

sys.exit(main(["solve", *sys.argv[1:]]))
