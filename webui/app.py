"""Build the Gradio Blocks: one tab per task, each a thin layer over `core.workbench.Workbench`."""

from __future__ import annotations

from functools import partial

import gradio as gr

from core.resources import asset
from core.workbench import Workbench
from webui.context import UIContext
from webui.locale import Translator
from webui.tabs.chat_layout import create_chat_tab
from webui.tabs.data_layout import create_data_tab
from webui.tabs.evaluate_layout import create_evaluate_tab
from webui.tabs.export_layout import create_export_tab
from webui.tabs.runs_layout import create_runs_tab
from webui.tabs.train_layout import create_train_tab

TAB_IDS = ("data", "train", "runs", "evaluate", "chat", "export")
# How often each open page asks whether a list changed (a few file times and run states: cheap to answer).
LIVE_SECONDS = 2.0


def build_app(workbench: Workbench, lang: str = "zh") -> gr.Blocks:
    ctx = UIContext(workbench, Translator(lang))
    t = ctx.t
    with gr.Blocks(title=t("app_title")) as app:
        # The other language is the same workbench on another path: runs and the training job stay put.
        gr.HTML(
            f'<div class="gw-header"><div><h1>{t("app_title")}</h1><p>{t("app_subtitle")}</p></div>'
            f'<a href="../{t("other_lang_code")}/" id="switch-language" lang="{t("other_lang_code")}">'
            f"{t('other_lang_name')}</a></div>"
        )
        gr.Markdown(f"> {t('demo_model_note')}")
        with gr.Tabs() as tabs:
            with gr.Tab(t("tab_data"), id="data"):
                data = create_data_tab(ctx)
            with gr.Tab(t("tab_train"), id="train") as train_tab:
                train = create_train_tab(ctx, data)
            with gr.Tab(t("tab_runs"), id="runs") as runs_tab:
                runs = create_runs_tab(ctx)
            with gr.Tab(t("tab_evaluate"), id="evaluate") as evaluate_tab:
                evaluate = create_evaluate_tab(ctx)
            with gr.Tab(t("tab_chat"), id="chat") as chat_tab:
                chat = create_chat_tab(ctx)
            with gr.Tab(t("tab_export"), id="export") as export_tab:
                export = create_export_tab(ctx)

        tab = {"data": data, "train": train, "runs": runs, "evaluate": evaluate, "chat": chat, "export": export}
        selected = {
            "chat": chat_tab,
            "evaluate": evaluate_tab,
            "runs": runs_tab,
            "train": train_tab,
            "export": export_tab,
        }
        wire_open_in(workbench, t, tabs, tab)
        seen_versions = wire_live_lists(workbench, tab)
        wire_page_load(app, workbench, tabs, tab, selected, seen_versions)
        wire_sample_render(app, tab)
    return app


def open_in_chat(workbench: Workbench, t: Translator, run: str | None):
    """A run's adapter goes to the adapter picker, a full fine-tuning run's model to the model picker, and
    the conversation starts afresh (old answers came from other weights)."""
    adapters, models = workbench.adapter_choices(), workbench.model_choices()
    none = (t("adapter_none"), "")
    if run and run in adapters:  # on the base model it was trained on
        base = str(workbench.snapshot(run).status.get("model") or "demo")
        return (
            gr.Tabs(selected="chat"),
            gr.update(choices=[*models, base] if base not in models else models, value=base),
            gr.update(choices=[none, *adapters], value=run),
            [],
        )
    if run and run in models:
        return gr.Tabs(selected="chat"), gr.update(choices=models, value=run), gr.update(value=""), []
    return gr.skip(), gr.skip(), gr.skip(), gr.skip()  # nothing to chat with yet (training, or failed)


def wire_open_in(workbench: Workbench, t: Translator, tabs: gr.Tabs, tab: dict) -> None:
    """Buttons that open a run in another tab, and a finished run joining every list."""
    train, runs, evaluate, chat, export = (tab[name] for name in TAB_IDS[1:])
    # A reply still streaming is stopped: it would write the old conversation back when it ends.
    for button, run_box, name in (
        (runs["open_chat"], runs["run"], "open_in_chat"),
        (train["try_in_chat"], train["finished_run"], "try_in_chat"),
    ):
        button.click(
            partial(open_in_chat, workbench, t),
            run_box,
            [tabs, chat["model"], chat["adapter"], chat["chatbot"]],
            cancels=chat["streams"],
            api_name=name,
        )
    # A run that finishes while the page is open joins every list at once (side by side picks it up too).
    train["finished_run"].change(*chat["refresh"], api_name=False).then(*runs["refresh"], api_name=False).then(
        *evaluate["refresh"], api_name=False
    ).then(*export["refresh"], api_name=False)
    runs["open_eval"].click(
        lambda run: (gr.Tabs(selected="evaluate"), gr.update(value=run)) if run else (gr.skip(), gr.skip()),
        runs["run"],
        [tabs, evaluate["run"]],
        api_name="open_in_evaluate",
    )


def wire_live_lists(workbench: Workbench, tab: dict) -> gr.State:
    """The lists every open page keeps up to date while it is open; returns the versions the page has seen."""
    data, train, runs, evaluate, chat, export = (tab[name] for name in TAB_IDS)
    # Live lists: every open page (each browser tab) asks every LIVE_SECONDS whether the workspace's datasets
    # (uploads, the chat's feedback) or runs (their names and states) changed, and refreshes only the lists
    # that did: a vote in one tab shows in the Data and Train tabs of every other, a run started from the CLI
    # joins the Runs tab. Hidden boxes carry the versions: a change event per kind of list.
    datasets_version, runs_version = gr.Textbox(visible=False), gr.Textbox(visible=False)
    seen_versions = gr.State(None)

    def check_lists(seen: dict | None):
        now = workbench.lists_version()
        if seen is None:  # the page has just read every list: remember, refresh nothing
            return now, gr.skip(), gr.skip()
        return (
            now if now != seen else gr.skip(),
            now["datasets"] if now["datasets"] != seen["datasets"] else gr.skip(),
            now["runs"] if now["runs"] != seen["runs"] else gr.skip(),
        )

    gr.Timer(LIVE_SECONDS).tick(
        check_lists,
        seen_versions,
        [seen_versions, datasets_version, runs_version],
        api_name=False,
        show_progress="hidden",
    )
    datasets_version.change(*data["refresh"], api_name=False, show_progress="hidden").then(
        *train["refresh"], api_name=False, show_progress="hidden"
    ).then(*evaluate["refresh"], api_name=False, show_progress="hidden")
    runs_version.change(*runs["refresh"], api_name=False, show_progress="hidden").then(
        *chat["refresh"], api_name=False, show_progress="hidden"
    ).then(*evaluate["refresh"], api_name=False, show_progress="hidden").then(
        *export["refresh"], api_name=False, show_progress="hidden"
    ).then(*train["refresh"], api_name=False, show_progress="hidden")
    return seen_versions


def wire_page_load(
    app: gr.Blocks, workbench: Workbench, tabs: gr.Tabs, tab: dict, selected: dict, seen_versions: gr.State
) -> None:
    """Lists read when a tab is opened, and everything the page reads as it opens."""
    data, train, runs, evaluate, chat, export = (tab[name] for name in TAB_IDS)
    chat_tab, evaluate_tab, runs_tab = selected["chat"], selected["evaluate"], selected["runs"]
    train_tab, export_tab = selected["train"], selected["export"]
    # Lists of runs go stale while training: refresh them whenever their tab is opened.
    chat_tab.select(*chat["refresh"], api_name=False)
    evaluate_tab.select(*evaluate["refresh"], api_name=False)
    runs_tab.select(*runs["refresh"], api_name=False).then(*runs["compare"], api_name=False)
    train_tab.select(*train["refresh"], api_name=False)
    export_tab.select(*export["refresh"], api_name=False)
    # The tab in use is kept in the address (#train), so a refresh or a shared link opens it again.
    # (webui/server.py's page script writes the address when a tab is clicked.)
    tab_in_address = gr.Textbox(visible=False)
    app.load(
        lambda wanted: gr.Tabs(selected=wanted) if wanted in TAB_IDS else gr.skip(),
        tab_in_address,
        tabs,
        js="() => window.location.hash.slice(1)",
        api_name=False,
    )
    # Every list of the workspace (datasets, models, runs) is read when the page opens: the page as served
    # holds none of it, so nothing of the workspace reaches a visitor who has not logged in.
    # The first tab's table comes first; the other tabs' lists follow.
    app.load(workbench.lists_version, None, seen_versions, api_name=False).then(*data["refresh"], api_name=False).then(
        **data["preview"], api_name=False
    ).then(*train["refresh"], api_name=False).then(*train["restore"], api_name=False).then(
        *train["method_groups"], api_name=False
    ).then(*chat["refresh"], api_name=False).then(*evaluate["refresh"], api_name=False).then(
        *runs["refresh"], api_name=False
    ).then(*export["refresh"], api_name=False)


def wire_sample_render(app: gr.Blocks, tab: dict) -> None:
    """The data tab's sample and histogram follow the train tab's model, template and cutoff."""
    data, train = tab["data"], tab["train"]
    # The data tab renders a sample with the model and template chosen in the train tab.
    render_inputs = [
        data["dataset"],
        data["format"],
        train["fields"]["model_name_or_path"],
        train["fields"]["template"],
        data["sample_index"],
        data["columns"],
    ]
    for trigger in render_inputs[:-1]:
        trigger.change(data["render"], render_inputs, data["rendered"], api_name=False, show_progress="hidden")
    # The column mapping is typed: re-render when it is committed (Enter, leaving the box), not per keystroke.
    for committed in (data["columns"].blur, data["columns"].submit):
        committed(data["render"], render_inputs, data["rendered"], api_name=False, show_progress="hidden")
        committed(
            data["lengths"],
            render_inputs[:4] + [train["fields"]["cutoff_len"], data["columns"]],
            data["histogram"],
            api_name=False,
            show_progress="hidden",
        )
    app.load(data["render"], render_inputs, data["rendered"], api_name="render_sample")
    length_inputs = render_inputs[:4] + [train["fields"]["cutoff_len"], data["columns"]]
    for trigger in length_inputs[:-1]:
        trigger.change(data["lengths"], length_inputs, data["histogram"], api_name=False, show_progress="hidden")
    app.load(data["lengths"], length_inputs, data["histogram"], api_name="token_lengths")
    app.load(**train["estimate"], api_name="estimate_memory")
    app.load(**train["processes"], api_name=False)
    app.load(**train["command"], api_name="command_preview")


def launch_kwargs(workbench: Workbench) -> dict:
    """Settings for `Blocks.launch` that every launcher (launch.py, tests) shares."""
    return {"css": asset("ui.css").read_text(encoding="utf-8"), "allowed_paths": [str(workbench.exports)]}
