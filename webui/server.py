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

from core.resources import asset_file
from core.workbench import Workbench
from webui.app import build_app, launch_kwargs
from webui.locale import LANGUAGES


def build_server(workbench: Workbench, default_lang: str = "zh", auth: tuple[str, str] | None = None) -> FastAPI:
    server = FastAPI(title="GLM Workbench", docs_url=None, redoc_url=None, openapi_url=None)

    @server.get("/", include_in_schema=False)
    def to_default_language() -> RedirectResponse:
        return RedirectResponse(f"{default_lang}/")

    @server.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(asset_file("favicon.ico"), media_type="image/x-icon")

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
            js=KEEP_TAB_ACROSS_LANGUAGES,
            **options,
        )
        # gradio checks that a file an event receives was uploaded (not a server path sent as FileData) only in
        # apps it launched itself: mounted, it would copy any file the process can read into its cache.
        blocks.has_launched = True
    return server


# The tab in use is kept in the address (#train): written when a tab is shown (clicked, or opened by a button
# such as Open in chat), and carried by the language link to the other page. The first tab shown while the page
# starts is not written: the page may be about to restore the tab from the address.
KEEP_TAB_ACROSS_LANGUAGES = """() => {
  const started = Date.now();
  new MutationObserver(() => {
    const shown = document.querySelector('button[role=tab][data-tab-id][aria-selected=true]');
    if (shown && Date.now() - started > 3000) { history.replaceState(null, '', '#' + shown.dataset.tabId); }
  }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ['aria-selected']});
  document.addEventListener('click', (event) => {
    const tab = event.target.closest('button[role=tab][data-tab-id]');
    if (tab) { history.replaceState(null, '', '#' + tab.dataset.tabId); }
    const link = event.target.closest('#switch-language');
    if (link) { link.href = link.getAttribute('href').split('#')[0] + window.location.hash; }
  }, true);
}"""


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
