"""`glm-workbench` (also `python -m core.cli`): the same engine the web UI drives, from a terminal, and the
command that starts the web UI (`glm-workbench webui`; `launch.py` and `python -m webui` call it too)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
from pathlib import Path

from core.chat.engine import ChatEngine, GenerationSettings, check_adapter_files
from core.chat.turns import parse_tools, read_reply
from core.config import RunConfig, load_yaml_with_notes, parse_overrides
from core.errors import DataError, ExportError, ModelError, WorkbenchError, config_error, describe
from core.evaluation.arena import ArenaSettings, auto_judge, judge, start_arena, view
from core.evaluation.evaluate import EvalSettings, evaluate_run
from core.export import merge_run, zip_run
from core.feedback import FeedbackStore
from core.i18n import Message, default_language, message
from core.models.chatglm import convert_chatglm
from core.models.demo import build_demo_model, default_demo_dir, ensure_demo_model
from core.models.loader import DTYPES, configure_threads
from core.processes import close_in_children, guard_children
from core.training.distributed import accelerate_command, accelerate_config, node_commands, process_plan
from core.training.lifecycle import check_inputs, claim_for_resume, create_run

DEFAULT_WORKSPACE = "workspace"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
UI_PORT = 7860


def say(text: Message | str) -> None:
    """A sentence for the person at the terminal, in their language (stderr: stdout is for results)."""
    print(text.render(default_language()) if isinstance(text, Message) else text, file=sys.stderr, flush=True)


def cmd_demo_model(args: argparse.Namespace) -> int:
    if args.dir:
        print(build_demo_model(args.dir, overwrite=args.overwrite))
    elif args.overwrite:
        print(build_demo_model(default_demo_dir(), overwrite=True))
    else:
        print(ensure_demo_model())
    return 0


def parse_auth(value: str) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise config_error("--auth", "cli.auth_syntax")
    return user, password


def bind_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (as uvicorn binds one), taken before the slow start: a port in use is said at
    once, and nothing can take it while the pages are built. The server then listens on this socket."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            from core.processes import port_holders

            holders = port_holders(port)
            if holders:  # say exactly which process holds it (an orphan of a killed workbench, say)
                pid, command = holders[0]
                raise config_error(
                    "--port",
                    "cli.port_taken_by",
                    host=host,
                    port=port,
                    pid=pid,
                    command=command,
                    free=free_port_after(host, port),
                ) from None
            raise config_error(
                "--port", "cli.port_taken", host=host, port=port, free=free_port_after(host, port)
            ) from None
        detail = exc.strerror or str(exc)
        raise config_error("--host", "cli.cannot_listen", host=host, port=port, detail=detail) from None
    # Never passed on: not to programs it starts (close-on-exec), nor to processes it forks (the data workers
    # of `datasets`), which close it at once and die with this process (core/processes.py).
    sock.set_inheritable(False)

    guard_children()
    close_in_children(sock.fileno())
    return sock


def free_port_after(host: str, port: int) -> int:
    """The first port after `port` that is free on `host` now (one to suggest), else one the system picks."""
    for candidate in [*range(port + 1, min(port + 50, 65536)), 0]:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return probe.getsockname()[1]
    return 0


def cmd_webui(args: argparse.Namespace) -> int:
    auth = parse_auth(args.auth)
    listener = bind_port(args.host, args.port)
    try:
        from core.models.demo import default_demo_dir, ensure_demo_model, is_demo_model
        from core.models.loader import configure_threads
        from core.workbench import Workbench

        if args.share:
            say(message("cli.share_warning"))
        if args.host not in LOOPBACK_HOSTS and auth is None:
            say(message("cli.ui_open_warning", host=args.host))
        threads = configure_threads()
        if not is_demo_model(default_demo_dir()):
            say(message("cli.demo_building"))
        say(message("cli.demo_ready", folder=str(ensure_demo_model()), threads=threads))
        # Reachable by others (a login, another address, a public link): typed paths stay in allowed folders.
        limited = auth is not None or args.host not in LOOPBACK_HOSTS or args.share or bool(args.allowed_dirs)
        extra = [d for item in args.allowed_dirs for d in item.split(os.pathsep) if d]
        workbench = Workbench(args.workspace, allowed_dirs=extra if limited else None)
        say(message("cli.workspace", folder=str(workbench.workspace)))
        if workbench.access.limited:
            say(message("cli.allowed_dirs", folders=", ".join(str(r) for r in workbench.access.roots)))
        # The UI layer, and gradio with it, is loaded for this command only: the engine's commands never need it.
        from webui.serve import serve

        announce = lambda url: say(message("cli.ui_listening", url=url))  # noqa: E731
        return serve(workbench, listener, args.lang, auth, args.share, announce)
    finally:
        listener.close()


def cmd_train(args: argparse.Namespace) -> int:
    from core.training.runner import TrainingSession

    configure_threads()
    if args.resume:
        claimed = claim_for_resume(Path(args.resume))
    else:
        if args.config:
            config, notes = load_yaml_with_notes(args.config, parse_overrides(args.set))
        else:
            config, notes = RunConfig.from_dict(parse_overrides(args.set)), []
        for note in notes:
            say(f"note: {note}")
        check_inputs(config)
        claimed = create_run(args.workspace, config)
    run_dir, config = claimed.run_dir, claimed.config
    say(message("cli.run_folder", folder=str(run_dir)))
    try:
        if config.nproc_per_node > 1:
            from core.training.distributed import run_distributed

            say(message("cli.distributed", processes=config.nproc_per_node, log=str(run_dir / "log.txt")))
            status = run_distributed(run_dir, config.nproc_per_node, claimed.lock, claimed.resume)
        else:
            notify = lambda note: say(message("cli.note", note=note))  # noqa: E731
            status = TrainingSession(
                config, run_dir, show_progress=True, resume=claimed.resume, lock=claimed.lock, notify=notify
            ).run()
    finally:
        claimed.lock.release()
    if status.get("state") != "finished":
        problem = Message.from_json(status.get("error_message")) or status.get("error") or ""
        say(message("cli.training_ended", state=message(f"state.{status.get('state', 'failed')}"), error=problem))
        if status.get("state") in ("failed", "aborted") and status.get("cause") != "settings":
            say(message("cli.resume_hint", folder=str(run_dir)))
        print(run_dir)
        return 1
    say(message("cli.final_loss", loss=f"{status.get('final_loss') or 0:.4f}", steps=status.get("step")))
    print(run_dir)
    return 0


def resolve_adapter(path: str) -> Path:
    """An adapter folder, or a run folder holding adapter/; anything else is refused naming the path."""
    from core.runs import resolve_adapter as resolve

    return resolve(path)


def cmd_chat(args: argparse.Namespace) -> int:
    """One prompt's answer on stdout. A model that thinks (the GLM-4.5 generation) prints its reasoning first,
    dimmed (plain when NO_COLOR is set), unless --no-thinking; its tool calls print as calls, one a line."""
    adapter = None
    if args.adapter:  # refused before the model loads
        folder = resolve_adapter(args.adapter)
        adapter = (folder.parent.name if folder.name == "adapter" else folder.name, str(folder))
    tools = None
    if args.tools:
        try:
            tools = parse_tools(Path(args.tools).read_text(encoding="utf-8"))
        except OSError as exc:
            raise DataError("chat.tools_unreadable", args.tools, detail=exc.strerror or str(exc)) from None
        except DataError as exc:
            raise DataError(exc.detail, args.tools) from None
    configure_threads()
    engine = ChatEngine(template=args.template)
    engine.load_model(args.model, trust_remote_code=args.trust_remote_code)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        greedy=args.greedy,
        enable_thinking=not args.no_thinking,
    )
    messages = [{"role": "user", "content": args.prompt}]
    offered = tools if engine.takes_tools else None  # a plain template has no tools
    text = ""
    for text in engine.stream(messages, args.system, adapter, settings, tools=offered):  # noqa: B007
        pass  # each item is the whole reply so far: the last one is the answer
    reply = read_reply(text, engine.reading(not args.no_thinking), done=True)
    if reply.reasoning and not args.no_thinking:
        dim, plain = ("", "") if os.environ.get("NO_COLOR") else ("\033[2m", "\033[0m")
        print(dim + reply.reasoning + plain)
    if reply.content:
        print(reply.content)
    for call in reply.tool_calls:
        arguments = json.dumps(call["arguments"], ensure_ascii=False)
        print(message("cli.tool_call", name=call["name"], arguments=arguments).render(default_language()))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    configure_threads()
    settings = EvalSettings(
        max_samples=args.max_samples,
        max_new_tokens=args.max_new_tokens,
        greedy=not args.sample,
        temperature=args.temperature,
    )
    result = evaluate_run(args.run, args.dataset, args.format, settings)
    print(json.dumps(result.metrics, ensure_ascii=False, indent=1))
    return 0


def cmd_arena(args: argparse.Namespace) -> int:
    """Two models answer a dataset's prompts; ROUGE-L judges against the references, or the person at the
    terminal judges blind (--judge person). Prints the scores as JSON; the arena stays in RUN/eval/."""
    configure_threads()
    settings = ArenaSettings(max_samples=args.max_samples, max_new_tokens=args.max_new_tokens, seed=args.seed)
    arena = start_arena(args.run, args.against, args.dataset, args.format, settings)
    say(message("cli.arena_saved", file=str(arena.path), items=len(arena.items)))
    if args.judge == "rouge":
        arena = auto_judge(args.run, arena.id)
    else:
        for item in view(arena).items:
            verdict = _ask_verdict(item, len(arena.items))
            if verdict is None:
                break
            arena = judge(args.run, arena.id, item.index, verdict)
    shown = view(arena)
    print(json.dumps({"arena": shown.id, "first": shown.first, "second": shown.second, **shown.scores}, indent=1))
    return 0


def _ask_verdict(item, total: int) -> str | None:
    """One blind item on the terminal (stderr); reads 1 (left), 2 (right) or t (tie) from stdin; None at its end."""
    lang = default_language()
    prompt = item.prompt[-1]["content"]
    say(message("cli.arena_item", number=item.index + 1, total=total, prompt=prompt))
    say(f"  [1] {item.left}\n  [2] {item.right}")
    while True:
        print(message("cli.arena_ask").render(lang), end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer:
            return None
        verdict = {"1": "left", "l": "left", "2": "right", "r": "right", "t": "tie", "=": "tie"}.get(
            answer.strip().lower()
        )
        if verdict:
            return verdict


def cmd_feedback(args: argparse.Namespace) -> int:
    """The chat's feedback datasets in a workspace, with their counts (one JSON object per line)."""
    for counts in FeedbackStore(args.workspace).datasets():
        print(json.dumps(counts.to_dict(), ensure_ascii=False))
    return 0


def cmd_launch_config(args: argparse.Namespace) -> int:
    import yaml

    config = accelerate_config(args.kind, args.nproc, args.nnodes, args.mixed_precision)
    Path(args.out).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    print(f"wrote {args.out}; start a prepared run folder with:", file=sys.stderr)
    print(accelerate_command(args.out, "RUN_DIR"))
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    """The torchrun command of each machine of a several-machine run (the train tab shows the same)."""
    say(process_plan(args.nproc, args.distributed, args.nnodes))
    say(message("cli.nodes", addr=args.master_addr))
    for command in node_commands(args.run_dir, args.nnodes, args.nproc, args.master_addr, args.port):
        print(command)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    report = convert_chatglm(args.source, args.target, overwrite=args.overwrite)
    say(str(report))
    print(report.target)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from core.api import MAX_QUEUE, create_api

    configure_threads()
    adapters: dict[str, str] = {}
    for item in args.adapter:  # each refused before the model loads: not an adapter, or a damaged file in it
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise ModelError("cli.adapter_syntax", item=item)
        adapters[name] = str(resolve_adapter(path))
        check_adapter_files(adapters[name])
    engine = ChatEngine(template=args.template)
    engine.load_model(args.model)
    base_name = Path(args.model).name if args.model != "demo" else "demo"
    api_key = args.api_key or os.environ.get("GLM_WORKBENCH_API_KEY")
    if args.host not in LOOPBACK_HOSTS and not api_key:
        say(message("cli.api_open_warning", host=args.host))
    max_queue = args.max_queue if args.max_queue is not None else MAX_QUEUE
    app = create_api(
        engine,
        base_name,
        lambda: adapters,
        api_key,
        max_queue=max_queue,
        image_dirs=args.image_dir or None,
        fetch_images=args.fetch_images,
    )
    say(
        message("cli.api_listening", url=f"http://{args.host}:{args.port}/v1", models=", ".join([base_name, *adapters]))
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if not (args.zip or args.merge):
        raise ExportError("export.what")
    if args.zip:
        print(zip_run(args.run, args.zip, overwrite=args.overwrite))
    if args.merge:
        print(merge_run(args.run, args.merge, args.dtype, args.max_shard_size, overwrite=args.overwrite))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glm-workbench", description="Fine-tune GLM / ChatGLM models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ui = commands.add_parser(
        "webui",
        help="start the web UI (also `python launch.py` in a checkout, or `python -m webui`)",
        description="Start the web UI. Both languages are served at once, /zh/ and /en/; --lang picks where / leads.",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    ui.add_argument("--port", type=int, default=UI_PORT, help="(default: %(default)s)")
    ui.add_argument(
        "--workspace",
        default=DEFAULT_WORKSPACE,
        help="folder for runs, uploads and exports (default: ./%(default)s in the folder you start from)",
    )
    ui.add_argument(
        "--lang", default="zh", choices=["zh", "en"], help="language / leads to (both are served: /zh/ and /en/)"
    )
    ui.add_argument(
        "--allowed-dirs",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose files the page may use (datasets, models, adapters, merge targets), besides the "
        "workspace, the workbench home and GLM_WORKBENCH_MODEL_DIRS; repeatable, or separated like PATH. Paths are "
        "limited this way whenever it is given, and always with --auth, --share or a --host other than this machine",
    )
    ui.add_argument(
        "--auth",
        default=os.environ.get("GLM_WORKBENCH_AUTH", ""),
        metavar="USER:PASSWORD",
        help="require a login for the page and its API (or set GLM_WORKBENCH_AUTH)",
    )
    ui.add_argument(
        "--share", action="store_true", help="also publish a public *.gradio.live link (off by default; needs internet)"
    )
    ui.set_defaults(func=cmd_webui)

    demo = commands.add_parser(
        "demo-model",
        help="build the tiny demo GLM-4 model into DIR; without DIR, the shared one that `--model demo` uses "
        "($GLM_WORKBENCH_HOME, default ~/.cache/glm-workbench), if it is not built yet",
    )
    demo.add_argument("dir", nargs="?")
    demo.add_argument("--overwrite", action="store_true", help="replace an earlier demo model built there")
    demo.set_defaults(func=cmd_demo_model)

    train = commands.add_parser("train", help="train from a YAML config; prints the run folder last")
    train.add_argument(
        "config",
        nargs="?",
        help="YAML config (ours, or LLaMA-Factory's sft/dpo/kto YAML); without it, the defaults plus --set "
        "(a preference stage: --set stage=dpo --set dataset=PAIRS)",
    )
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an aborted/failed run from its last checkpoint")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    train.add_argument("--workspace", default=DEFAULT_WORKSPACE, help="where run folders go (default: %(default)s)")
    train.set_defaults(func=cmd_train)

    chat = commands.add_parser("chat", help="answer one prompt with a model and optional adapter")
    chat.add_argument("--model", default="demo")
    chat.add_argument("--adapter", help="adapter folder or run folder")
    chat.add_argument("--prompt", required=True)
    chat.add_argument("--system", default="")
    chat.add_argument(
        "--template", default="auto", help="auto (from the tokenizer), glm4, chatglm3, chatglm2 or chatglm (ChatGLM-6B)"
    )
    chat.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let transformers run the Python code shipped with a model the workbench has no class for; never "
        "needed for GLM-4, ChatGLM-6B or ChatGLM2/3 (THUDM checkpoints are converted and never run their code)",
    )
    chat.add_argument(
        "--no-thinking",
        action="store_true",
        help="GLM-4.5 generation: answer without reasoning (enable_thinking off); else the reasoning prints dimmed",
    )
    chat.add_argument("--tools", metavar="FILE", help="a JSON file with OpenAI's tools list, offered to the model")
    chat.add_argument("--greedy", action="store_true", help="deterministic decoding")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.7)
    chat.add_argument("--top-p", type=float, default=0.9)
    chat.set_defaults(func=cmd_chat)

    evaluate = commands.add_parser(
        "eval",
        help="loss, perplexity and BLEU-4/ROUGE of a run on a dataset; "
        "writes RUN/eval/metrics.json and predictions.jsonl",
    )
    evaluate.add_argument("--run", required=True, help="run folder")
    evaluate.add_argument("--dataset", required=True, help="data file or demo dataset name")
    evaluate.add_argument("--format", default="auto")
    evaluate.add_argument("--max-samples", type=int, default=0, help="0 = all")
    evaluate.add_argument("--max-new-tokens", type=int, default=128)
    evaluate.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    evaluate.add_argument("--temperature", type=float, default=0.7)
    evaluate.set_defaults(func=cmd_eval)

    arena = commands.add_parser(
        "arena",
        help="two models answer a dataset's prompts and are judged blind (ROUGE-L, or you); "
        "writes RUN/eval/arena-<id>.json",
    )
    arena.add_argument("--run", required=True, help="the first contestant's run folder (the arena is kept there)")
    arena.add_argument("--against", help="the second contestant's run folder (default: the first one's base model)")
    arena.add_argument("--dataset", required=True, help="data file or demo dataset name: prompts and references")
    arena.add_argument("--format", default="auto")
    arena.add_argument("--max-samples", type=int, default=20, help="0 = all")
    arena.add_argument("--max-new-tokens", type=int, default=128)
    arena.add_argument("--seed", type=int, default=0, help="the left/right order")
    arena.add_argument(
        "--judge",
        choices=["rouge", "person"],
        default="rouge",
        help="rouge: ROUGE-L against each reference answer; person: you, item by item, blind",
    )
    arena.set_defaults(func=cmd_arena)

    feedback = commands.add_parser("feedback", help="list the chat's feedback datasets (workspace/feedback/)")
    feedback.add_argument("--workspace", default=DEFAULT_WORKSPACE)
    feedback.set_defaults(func=cmd_feedback)

    launch = commands.add_parser("launch-config", help="write an accelerate config for FSDP or DeepSpeed ZeRO-2/3")
    launch.add_argument("out", help="output .yaml")
    launch.add_argument("--kind", choices=["fsdp", "zero2", "zero3"], default="fsdp")
    launch.add_argument("--nproc", type=int, default=8, help="processes (GPUs) in all")
    launch.add_argument("--nnodes", type=int, default=1)
    launch.add_argument("--mixed-precision", default="bf16", choices=["bf16", "fp16", "no"])
    launch.set_defaults(func=cmd_launch_config)

    nodes = commands.add_parser("nodes", help="the torchrun command for each machine of a several-machine run")
    nodes.add_argument("run_dir", help="the prepared run folder (config.yaml in it), at this path on every machine")
    nodes.add_argument("--nnodes", type=int, default=2, help="machines")
    nodes.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per machine")
    nodes.add_argument("--master-addr", required=True, help="node 0's address, reachable from the others")
    nodes.add_argument("--port", type=int, default=29500)
    nodes.add_argument("--distributed", choices=["ddp", "fsdp"], default="ddp", help="as the run's config says")
    nodes.set_defaults(func=cmd_nodes)

    convert = commands.add_parser(
        "convert",
        help="convert a THUDM ChatGLM-6B, ChatGLM2/3 or glm-4-9b-chat checkpoint to a native class "
        "(Glm1ForCausalLM for ChatGLM-6B, GlmForCausalLM for the others)",
    )
    convert.add_argument("source")
    convert.add_argument("target", help="a new or empty folder")
    convert.add_argument(
        "--overwrite",
        action="store_true",
        help="replace TARGET if it is an earlier conversion of ours (never anything else)",
    )
    convert.set_defaults(func=cmd_convert)

    api = commands.add_parser("api", help="serve a model and its adapters as an OpenAI-compatible API")
    api.add_argument("--model", default="demo")
    api.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an adapter (folder or run folder) served under NAME; repeatable",
    )
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (or set GLM_WORKBENCH_API_KEY)")
    api.add_argument("--template", default="auto")
    api.add_argument(
        "--max-queue",
        type=int,
        default=None,
        metavar="N",
        help="requests that may wait while one generates; more are answered 429 with Retry-After "
        "(default: 64; -1: no limit)",
    )
    api.add_argument(
        "--image-dir",
        action="append",
        default=[],
        metavar="FOLDER",
        help="a vision model: image files in FOLDER may be named by path in image_url parts; repeatable "
        "(default: images come as data: URIs only; web addresses are not fetched)",
    )
    api.add_argument(
        "--fetch-images",
        action="store_true",
        help="a vision model: image_url parts may be http(s) addresses, which the server fetches (10 s, 20 MiB "
        "each); it then reaches any address a client names, its own network included: switch it on for trusted "
        "clients only",
    )
    api.set_defaults(func=cmd_api)

    export = commands.add_parser("export", help="zip a run's adapter (or model), or merge a LoRA into its base")
    export.add_argument("--run", required=True, help="run folder")
    export.add_argument("--zip", help="output .zip path")
    export.add_argument(
        "--merge", metavar="DIR", help="write the base model with the LoRA merged in to DIR (a new or empty folder)"
    )
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the zip or merge folder if it is an earlier export of ours (never anything else)",
    )
    export.add_argument("--dtype", default="auto", choices=DTYPES, help="merged weights")
    export.add_argument("--max-shard-size", default="2GB", help="merged weights' shard size (default: %(default)s)")
    export.set_defaults(func=cmd_export)
    return parser


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("glm-workbench")
    except PackageNotFoundError:  # a checkout run without installing it
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    guard_children()  # data workers forked by any command die with it
    try:
        return args.func(args)
    except WorkbenchError as exc:
        say(message("cli.error", error=exc.render(default_language())))
        return 2
    except KeyboardInterrupt:
        say(message("cli.interrupted"))
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one plain line, the traceback only when asked for
        if os.environ.get("GLM_WORKBENCH_DEBUG"):
            raise
        say(message("cli.error", error=describe(exc, default_language())))
        return 1


if __name__ == "__main__":
    sys.exit(main())
