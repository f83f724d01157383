"""``python -m multiagent`` and the ``multiagent`` command: the CLI, imported here.

The CLI's modules (typer, rich, pydantic, the settings) take a moment to import, and a Ctrl-C
in that moment raised ``KeyboardInterrupt`` out of the import, before the CLI's own handling
was in place: a traceback where every command says ``interrupted``. This module imports only
the standard library, so it says it too and exits 130 (128 + SIGINT), as every command does.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Import the CLI and run it (see :func:`multiagent.cli.main`)."""
    try:
        from multiagent.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        os._exit(130)  # nothing to tear down: no command has started
    run()


if __name__ == "__main__":
    main()
