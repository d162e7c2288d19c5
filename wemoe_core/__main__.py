"""Command line: ``python -m wemoe_core <command>``; see ``--help``."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
