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
from webui.locale import LANGUAGES, Translator


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
            js=KEEP_TAB_ACROSS_LANGUAGES,
            i18n=GRADIO_STATUS_WORDS,
            **options,
        )
        # gradio checks that a file an event receives was uploaded (not a server path sent as FileData) only in
        # apps it launched itself: mounted, it would copy any file the process can read into its cache.
        blocks.has_launched = True
    server.add_middleware(PageLanguage, pages={path: lang for lang in LANGUAGES for path in (f"/{lang}", f"/{lang}/")})
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


# Gradio announces each finished event to screen readers as `common.complete` (or `common.error`), keys its
# own tables lack, so the key itself was read aloud: the words, in each page's language (as gradio names it).
GRADIO_STATUS_WORDS = gr.I18n(
    **{
        {"zh": "zh-CN"}.get(lang, lang): {
            "common.complete": Translator(lang)("status_complete"),
            "common.error": Translator(lang)("status_error"),
        }
        for lang in LANGUAGES
    }
)


def page_language_script(lang: str) -> str:
    """Gradio 6 translates its own words (the upload box, Clear, accessible names) into the language it reads from
    `navigator.language` once, when its first module starts. Each page here has one language: this classic script,
    put first in the page's <head> by PageLanguage, runs before any module and gives gradio that language. (As
    gradio's `head=` it would run after gradio had chosen: too late in a fresh browser.)"""
    locale = {"zh": "zh-CN", "en": "en"}[lang]
    return (
        "<script>(function(){try{"
        f"Object.defineProperty(navigator,'language',{{get:function(){{return '{locale}';}}}});"
        f"Object.defineProperty(navigator,'languages',{{get:function(){{return ['{locale}'];}}}});"
        f"document.documentElement.lang='{locale}';"
        "}catch(e){}})();</script>"
    )


class PageLanguage:
    """ASGI middleware: the HTML of each page in `pages` (request path -> language) gets page_language_script
    as the first thing in its <head>. The page is asked for uncompressed (gradio would brotli it) and rewritten
    whole; every other request passes untouched."""

    def __init__(self, app, pages: dict[str, str]):
        self.app = app
        self.scripts = {path: page_language_script(lang).encode() for path, lang in pages.items()}

    async def __call__(self, scope, receive, send) -> None:
        script = self.scripts.get(scope.get("path", "")) if scope["type"] == "http" else None
        if script is None or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        headers = [(name, value) for name, value in scope["headers"] if name.lower() != b"accept-encoding"]
        start: dict = {}
        body: list[bytes] = []

        async def rewrite(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            page = b"".join(body)
            response_headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            content_type = next((v for k, v in response_headers if k.lower() == b"content-type"), b"")
            if content_type.startswith(b"text/html") and b"<head>" in page:
                page = page.replace(b"<head>", b"<head>" + script, 1)
            response_headers.append((b"content-length", str(len(page)).encode()))
            await send({**start, "headers": response_headers})
            await send({"type": "http.response.body", "body": page})

        await self.app({**scope, "headers": headers}, receive, rewrite)
