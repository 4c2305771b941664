"""The explorer as a web page: ``lab/ui/pages/explorer.ipynb`` served by Voilà on loopback.

The page is the app only: a title and a few lines of help for its users, then
the explorer (``lab.ui.widgets.Explorer``); the tutorial on the explorer is
``notebooks/02-explorer.ipynb``, not served. Voilà runs one kernel per visitor
(about 400 MB each) and shows only the widgets and the help (sources stripped). Kernels are culled: one idle for
``CULL_IDLE_TIMEOUT_S`` seconds with no page connected (the visitor left) is
shut down, checked every ``CULL_INTERVAL_S`` seconds, so the server's memory
follows its visitors instead of growing until it stops.
``python -m lab app [--port N] [--cull-idle-timeout S]`` (``make app``)
serves on 127.0.0.1; ``voila_command`` gives the command line for tests and
scripts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lab.checks import check_int, check_port

# the app's own page, in a folder of its own: the kernel runs there, and no module beside it shadows another
EXPLORER = Path(__file__).resolve().parent / "pages" / "explorer.ipynb"
DEFAULT_PORT = 8866
CULL_IDLE_TIMEOUT_S = 600  # a kernel idle this long with no page connected is shut down
CULL_INTERVAL_S = 60  # how often the server looks for such kernels


def voila_command(port: int = DEFAULT_PORT, notebook: Path = EXPLORER, cull_idle_timeout_s: int = CULL_IDLE_TIMEOUT_S,
                  cull_interval_s: int = CULL_INTERVAL_S) -> list[str]:
    """The Voilà command that serves ``notebook`` on 127.0.0.1:``port`` with sources hidden, no browser, and idle
    kernels culled (``jupyter_server``'s ``MappingKernelManager``: idle for ``cull_idle_timeout_s`` seconds with
    no connection, i.e. the visitor's page closed, checked every ``cull_interval_s`` seconds)."""
    check_port("port", port)
    for name, value in (("cull_idle_timeout_s", cull_idle_timeout_s), ("cull_interval_s", cull_interval_s)):
        check_int(name, value, 1, hint=" seconds (without culling every visitor's kernel stays until the server "
                                       "stops)")
    return [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
            "--strip_sources=True", "--show_tracebacks=False",
            f"--MappingKernelManager.cull_idle_timeout={int(cull_idle_timeout_s)}",
            f"--MappingKernelManager.cull_interval={int(cull_interval_s)}",
            "--MappingKernelManager.cull_connected=False", "--MappingKernelManager.cull_busy=False",
            # plotly's JupyterLab renderer is built for a newer JupyterLab than Voila's page and can break the
            # widgets' loading; the explorer sends its plotly figures as self-contained HTML instead
            "--VoilaConfiguration.extension_denylist=jupyterlab-plotly"]
