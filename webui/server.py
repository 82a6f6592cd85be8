"""Serve the UI in both languages from one process: `/zh/` and `/en/`, with `/` sending to the default one.

Both pages drive the same `Workbench` (one training job, one chat engine), so switching language, or opening
the other language in a second tab, shows the same runs and gets the same 'busy' answer. Each page's strings,
including the messages built on the server, come from its own locale table.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse

from core.workbench import Workbench
from webui.app import FAVICON_PATH, build_app, launch_kwargs
from webui.locale import LANGUAGES


def build_server(workbench: Workbench, default_lang: str = "zh", auth: tuple[str, str] | None = None) -> FastAPI:
    server = FastAPI(title="GLM Workbench", docs_url=None, redoc_url=None, openapi_url=None)

    @server.get("/", include_in_schema=False)
    def to_default_language() -> RedirectResponse:
        return RedirectResponse(f"{default_lang}/")

    @server.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(FAVICON_PATH, media_type="image/x-icon")

    for lang in LANGUAGES:
        blocks = build_app(workbench, lang).queue(default_concurrency_limit=4)
        options: dict[str, Any] = launch_kwargs(workbench)
        server = gr.mount_gradio_app(
            server,
            blocks,
            path=f"/{lang}",
            auth=auth,
            footer_links=[],  # gradio's own API page and settings: not this tool's; their words stay English
            head=page_language_script(lang),
            **options,
        )
    return server


def page_language_script(lang: str) -> str:
    """Gradio translates its own words (the upload box, Clear, "Use via API", accessible names) into the
    browser's language. Each page here has one language: tell gradio that one, before it starts."""
    locale = {"zh": "zh-CN", "en": "en"}[lang]
    return (
        "<script>(function(){try{"
        f"Object.defineProperty(navigator,'language',{{get:function(){{return '{locale}';}}}});"
        f"Object.defineProperty(navigator,'languages',{{get:function(){{return ['{locale}'];}}}});"
        f"document.documentElement.lang='{locale}';"
        "}catch(e){}})();</script>"
    )
