"""The explorer as a web page: ``notebooks/02-explorer.ipynb`` served by Voilà on loopback.

Voilà runs one kernel per visitor and shows only the widgets (sources
stripped). ``python -m lab.ui.app [--port N]`` (``make app``) serves on
127.0.0.1; ``voila_command`` gives the command line for tests and scripts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXPLORER = Path(__file__).resolve().parents[2] / "notebooks" / "02-explorer.ipynb"
DEFAULT_PORT = 8866


def voila_command(port: int = DEFAULT_PORT, notebook: Path = EXPLORER) -> list[str]:
    """The Voilà command that serves ``notebook`` on 127.0.0.1:``port`` with sources hidden, no browser."""
    return [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
            "--strip_sources=True", "--show_tracebacks=False"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.ui.app", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    print(f"serving the explorer on http://127.0.0.1:{args.port}/ (Ctrl-C stops)", flush=True)
    os.execv(sys.executable, voila_command(args.port))


if __name__ == "__main__":
    main()
