"""Serve the web UI: `glm-workbench webui`, `python -m webui` and `python launch.py` all end here.

The command line (core/cli.py) checks the options, binds the port, builds the demo model and opens the workspace;
this module, the only part that needs gradio, puts the pages on that socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.workbench import Workbench

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported, below
SHUTDOWN_GRACE_S = 3


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
        from starlette.middleware import Middleware

        from webui.server import PageLanguage

        listener.close()  # gradio binds the port itself; it was free a moment ago
        app = build_app(workbench, lang)
        app.queue(default_concurrency_limit=4).launch(
            server_name=host,
            server_port=port,
            auth=auth,
            share=True,
            app_kwargs={"middleware": [Middleware(PageLanguage, pages={"/": lang})]},  # gradio's words in `lang`
            **launch_kwargs(workbench),
        )
        return 0
    import uvicorn

    from webui.server import build_server

    server = build_server(workbench, lang, auth)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    announce(f"http://{shown}:{port}/")
    # Ctrl-C (or SIGTERM) stops it within seconds: an open page keeps a connection, which uvicorn would otherwise
    # wait for without end, and silently at this log level.
    config = uvicorn.Config(server, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    logging.getLogger("uvicorn.error").addFilter(CalmShutdown())
    uvicorn.Server(config).run(sockets=[listener])
    return 0


class CalmShutdown(logging.Filter):
    """Connections still open at shutdown (a page's event stream) are cancelled after the grace period: expected,
    so uvicorn's error lines and tracebacks about it are left out."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            return False
        return "timeout graceful shutdown exceeded" not in record.getMessage()
