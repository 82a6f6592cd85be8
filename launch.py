"""Start the GLM Workbench web UI: `python launch.py [--host 127.0.0.1] [--port 7860] [--lang zh|en]`."""

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
    parser.add_argument("--lang", default="zh", choices=["zh", "en"], help="interface language")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from core.models.demo import default_demo_dir, ensure_demo_model, is_demo_model
    from core.models.loader import configure_threads
    from core.workbench import Workbench
    from webui.app import build_app, launch_kwargs

    threads = configure_threads()
    if not is_demo_model(default_demo_dir()):
        print("Building the tiny demo model (one time, a few seconds)…", flush=True)
    print(f"Demo model: {ensure_demo_model()}  ·  torch threads: {threads}", flush=True)
    workbench = Workbench(args.workspace)
    app = build_app(workbench, args.lang)
    app.queue(default_concurrency_limit=4).launch(server_name=args.host, server_port=args.port,
                                                  **launch_kwargs(workbench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
