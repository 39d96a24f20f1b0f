"""``python -m frameplan_cli <verb> ...``: the ``frameplan`` console script without the installed entry point."""
import sys

from frameplan_cli.main import main

sys.exit(main())
