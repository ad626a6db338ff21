"""``python -m modalseg``: the command line (``cli/``), for jobs without QGIS."""
import sys

from .cli.main import main

sys.exit(main())
