"""Start the GLM Workbench web UI: `python launch.py [--host 127.0.0.1] [--port 7860] [--lang zh|en]`.

Both languages are served at once, /zh/ and /en/ (the page links to the other); --lang picks where / leads."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GLM Workbench web UI")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--workspace", default="workspace", help="folder for runs, uploads and exports")
    parser.add_argument(
        "--lang", default="zh", choices=["zh", "en"], help="language / leads to (both are served: /zh/ and /en/)"
    )
    parser.add_argument(
        "--auth",
        default=os.environ.get("GLM_WORKBENCH_AUTH", ""),
        metavar="USER:PASSWORD",
        help="require a login for the page and its API (or set GLM_WORKBENCH_AUTH)",
    )
    parser.add_argument(
        "--share", action="store_true", help="also publish a public *.gradio.live link (off by default; needs internet)"
    )
    return parser.parse_args(argv)


def parse_auth(value: str) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit("--auth must be USER:PASSWORD")
    return user, password


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from core.models.demo import default_demo_dir, ensure_demo_model, is_demo_model
    from core.models.loader import configure_threads
    from core.workbench import Workbench
    from webui.app import build_app, launch_kwargs

    auth = parse_auth(args.auth)
    if args.share:
        print(
            "WARNING: --share publishes this workbench on a public URL; anyone with the link can train, chat "
            "and download. Use --auth USER:PASSWORD with it.",
            file=sys.stderr,
            flush=True,
        )
    if args.host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        print(
            f"WARNING: listening on {args.host} without --auth: anyone who can reach this address can use it.",
            file=sys.stderr,
            flush=True,
        )
    threads = configure_threads()
    if not is_demo_model(default_demo_dir()):
        print("Building the tiny demo model (one time, a few seconds)…", flush=True)
    print(f"Demo model: {ensure_demo_model()}  ·  torch threads: {threads}", flush=True)
    workbench = Workbench(args.workspace)
    if args.share:
        # A public link needs gradio's own launcher: it serves the --lang page only.
        app = build_app(workbench, args.lang)
        app.queue(default_concurrency_limit=4).launch(
            server_name=args.host, server_port=args.port, auth=auth, share=True, **launch_kwargs(workbench)
        )
        return 0
    import uvicorn

    from webui.server import build_server

    server = build_server(workbench, args.lang, auth)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"GLM Workbench: http://{shown}:{args.port}/  (中文 /zh/ · English /en/)", flush=True)
    uvicorn.run(server, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
