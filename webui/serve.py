"""Serve the web UI: `glm-workbench webui`, `python -m webui` and `python launch.py` all end here.

The command line (core/cli.py) checks the options, binds the port, builds the demo model and opens the workspace;
this module, the only part that needs gradio, puts the pages on that socket.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.workbench import Workbench

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported, below


def serve(
    workbench: Workbench,
    listener: socket.socket,
    lang: str,
    auth: tuple[str, str] | None,
    share: bool,
    announce: Callable[[str], None],
) -> int:
    """Serve both languages on `listener` (a bound socket) until interrupted; `announce(url)` once the pages are
    built. With `share`, gradio's own launcher serves the `lang` page (it alone makes a public link) on the
    listener's port."""
    from webui.app import build_app, launch_kwargs

    host, port = listener.getsockname()[:2]
    if share:
        listener.close()  # gradio binds the port itself; it was free a moment ago
        app = build_app(workbench, lang)
        app.queue(default_concurrency_limit=4).launch(
            server_name=host, server_port=port, auth=auth, share=True, **launch_kwargs(workbench)
        )
        return 0
    import uvicorn

    from webui.server import build_server

    server = build_server(workbench, lang, auth)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    announce(f"http://{shown}:{port}/")
    uvicorn.Server(uvicorn.Config(server, log_level="warning")).run(sockets=[listener])
    return 0
