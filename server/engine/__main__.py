"""python -m canvas_ls.server.engine: what a language server spawns (see process.py)."""

import sys

from .process import main

sys.exit(main())
