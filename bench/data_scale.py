"""Data at scale: how fast a large alpaca file becomes training samples, with how much memory, and how quickly a
second run on the same file trains; the Data tab's first page; the quick demo run's data loading.

    python bench/data_scale.py                            # 10k, 100k and 1M rows, then the Data tab on 1M rows
    python bench/data_scale.py --rows 10000 100000        # some sizes only
    python bench/data_scale.py --demo                     # the quick demo run (identity set, LoRA)
    python bench/data_scale.py --demo --repo /tmp/old     # the same with another checkout's code (before/after)

Files: deterministic alpaca JSONL (`write_rows`: sentences of the demo tokenizer's corpus, seed 0, about 380
bytes a row), written once into --data-dir. Each start is a fresh process doing what `glm-workbench train` does
(check_inputs, create_run, TrainingSession) with LoRA on the demo GLM-4, cutoff 512, batch 4, 5 steps:
- first start, with an empty data cache (a fresh workbench home): seconds to the end of the first training step
  (and to the start of training: the step's own time depends on what else the machine runs), the data
  preparation's seconds (reading + checking + tokenizing) and rows per second, and peak memory;
- second start, with the cache the first one left: the same times (three starts, the median reported).
Times are wall clock from starting the process (Python's own start and imports included). Peak memory: the
main process's own peak RSS (what /usr/bin/time reports), the largest worker's, and the peak sum of the
proportional set size (PSS) of the whole process tree, sampled every 0.1 s (forked workers share pages with
their parent: PSS counts a shared page once, divided among them). CPU seconds of the data preparation (the
process and its workers) give rows per CPU second, which depends less on what else the machine runs than the
wall clock does; the load average of the last minute is recorded with each start.
The Data tab: Workbench.peek_dataset (the first page), preview_dataset cold and from the cache, a later page,
the sampled length histogram and one rendered sample, on the largest file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = (10_000, 100_000, 1_000_000)


def write_rows(path: Path, count: int) -> Path:
    """`count` alpaca rows, the same for the same count: instruction, an input for 40%, 2-5 sentences answered."""
    corpus = (REPO / "assets" / "demo_model" / "corpus.txt").read_text(encoding="utf-8")
    sentences = [s.strip() for s in re.split(r"(?<=[。！？.!?])\s*", corpus) if len(s.strip()) > 8]
    rng = random.Random(0)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        for _ in range(count):
            row = {
                "instruction": rng.choice(sentences),
                "input": rng.choice(sentences) if rng.random() < 0.4 else "",
                "output": " ".join(rng.choice(sentences) for _ in range(rng.randint(2, 5))),
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(path)
    return path


# ---- children ---------------------------------------------------------------------------------------------------


def child_train(dataset: str, model: str, workspace: str, cutoff: int, steps: int, demo: bool) -> None:
    """One start as the CLI does it; prints timestamps (time.time()) as JSON."""
    marks: dict[str, float] = {"imported": 0.0}
    from transformers import TrainerCallback

    import core.training.runner as runner
    from core.config import RunConfig
    from core.models.loader import configure_threads
    from core.training.lifecycle import check_inputs, create_run

    configure_threads()
    marks["imported"] = time.time()

    class FirstStep(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks.setdefault("train_begin", time.time())

        def on_step_end(self, args, state, control, **kwargs):
            marks.setdefault("first_step", time.time())

    tokenize = runner.tokenize_dataset

    def cpu_seconds() -> float:
        """CPU time of this process and its finished children (the data workers)."""
        own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime

    def timed_tokenize(*args, **kwargs):
        started, cpu = time.time(), cpu_seconds()
        data = tokenize(*args, **kwargs)
        marks["tokenize_seconds"] = time.time() - started
        marks["tokenize_cpu_seconds"] = cpu_seconds() - cpu
        marks["samples"] = len(data.train)
        return data

    runner.tokenize_dataset = timed_tokenize
    if demo:  # the demo run of tests/test_e2e_core.py
        config = RunConfig(dataset=dataset, model_name_or_path=model, learning_rate=2e-3, num_train_epochs=10)
    else:
        config = RunConfig(
            dataset=dataset, model_name_or_path=model, cutoff_len=cutoff, max_steps=steps, num_train_epochs=0
        )
    started, cpu = time.time(), cpu_seconds()
    check_inputs(config)
    marks["check_seconds"] = time.time() - started
    marks["check_cpu_seconds"] = cpu_seconds() - cpu
    claimed = create_run(workspace, config)
    status = runner.TrainingSession(config, claimed.run_dir, lock=claimed.lock, callbacks=[FirstStep()]).run()
    claimed.lock.release()
    assert status["state"] == "finished", status
    marks["end"] = time.time()
    marks["max_rss_self_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    marks["max_rss_worker_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(marks))


def child_preview(dataset: str, model: str) -> None:
    """The Data tab's engine calls on a file, timed (seconds)."""
    from core.models.loader import configure_threads
    from core.workbench import Workbench

    configure_threads()
    wb = Workbench(tempfile.mkdtemp(prefix="bench-ws-"))
    found: dict[str, float] = {}

    def timed(name, call):
        started = time.time()
        value = call()
        found[name] = round(time.time() - started, 3)
        return value

    peek = timed("first_page_seconds", lambda: wb.peek_dataset(dataset, "auto", "", 20))
    found["first_page_rows"] = len(peek.rows) if peek else 0
    checked = timed("full_check_cold_seconds", lambda: wb.preview_dataset(dataset))
    timed("full_check_cached_seconds", lambda: wb.preview_dataset(dataset))
    timed("page_50000_cached_seconds", lambda: checked.page(50_000, 20))
    lengths = timed("histogram_seconds", lambda: wb.token_lengths(dataset, "auto", model, "auto"))
    found["histogram_samples"] = len(lengths.lengths)
    timed("render_sample_seconds", lambda: wb.render_sample(dataset, "auto", model, "auto", 123_456))
    found["rows"] = checked.row_count
    found["max_rss_self_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(found))


# ---- the parent -------------------------------------------------------------------------------------------------


def run_child(arguments: list[str], home: Path, repo: Path) -> dict:
    """Run a child under `home`, sampling its process tree's memory; its JSON plus start time and peaks."""
    import psutil

    env = {**os.environ, "GLM_WORKBENCH_HOME": str(home), "PYTHONPATH": str(repo)}
    started = time.time()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *arguments],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peaks = {"pss": 0, "rss": 0}

    def sample() -> None:
        root = psutil.Process(process.pid)
        while process.poll() is None:
            pss = rss = 0
            try:
                for member in [root, *root.children(recursive=True)]:
                    info = member.memory_full_info()
                    pss, rss = pss + info.pss, rss + info.rss
            except psutil.Error:
                pass
            peaks["pss"], peaks["rss"] = max(peaks["pss"], pss), max(peaks["rss"], rss)
            time.sleep(0.1)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, err = process.communicate()
    watcher.join()
    if process.returncode:
        raise RuntimeError(f"child failed ({process.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(started=started, tree_pss_mib=peaks["pss"] / 2**20, tree_rss_mib=peaks["rss"] / 2**20)
    result["load_average"] = round(os.getloadavg()[0], 2)  # the last minute's: what else the machine ran
    return result


def train_figures(result: dict, rows: int) -> dict:
    started = result["started"]
    figures = {
        "seconds_to_first_step": result["first_step"] - started,
        "seconds_to_training_start": result["train_begin"] - started,
        "seconds_total": result["end"] - started,
        "seconds_python_and_imports": result["imported"] - started,
        "check_seconds": result["check_seconds"],
        "tokenize_seconds": result["tokenize_seconds"],
        "data_seconds": result["check_seconds"] + result["tokenize_seconds"],
        "samples": result["samples"],
        "max_rss_self_mib": result["max_rss_self_mib"],
        "max_rss_worker_mib": result["max_rss_worker_mib"],
        "tree_pss_mib": result["tree_pss_mib"],
        "tree_rss_mib": result["tree_rss_mib"],
    }
    figures["rows_per_second_data"] = rows / figures["data_seconds"]
    figures["data_cpu_seconds"] = result["check_cpu_seconds"] + result["tokenize_cpu_seconds"]
    figures["rows_per_cpu_second"] = rows / max(figures["data_cpu_seconds"], 1e-9)
    figures["load_average"] = result["load_average"]
    return {key: round(value, 2) if isinstance(value, float) else value for key, value in figures.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "glm-workbench-bench-data"))
    parser.add_argument("--cutoff", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--demo", action="store_true", help="the quick demo run: identity set, LoRA, 130 steps")
    parser.add_argument("--repeat", type=int, default=1, help="demo runs (median reported)")
    parser.add_argument("--second-starts", type=int, default=3, help="second starts per size (median reported)")
    parser.add_argument("--repo", default=str(REPO), help="the checkout whose code the children run")
    parser.add_argument("--no-preview", action="store_true")
    parser.add_argument("--out", default="bench/results/data_scale.json", help="where the figures go (JSON)")
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "train":
            child_train(rest[0], rest[1], rest[2], args.cutoff, args.steps, demo=rest[3] == "demo")
        else:
            child_preview(rest[0], rest[1])
        return 0
    sys.path.insert(0, str(REPO))
    from core.models.demo import ensure_demo_model

    model = str(ensure_demo_model())  # built once; the children's homes hold only their data cache
    repo, data_dir = Path(args.repo).resolve(), Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "repo": str(repo), "cpus": os.cpu_count()}
    scratch = Path(tempfile.mkdtemp(prefix="bench-data-scale-"))

    def train(dataset: str, home: Path, rows: int, demo: bool = False) -> dict:
        kind = "demo" if demo else "run"
        workspace = tempfile.mkdtemp(dir=scratch)
        found = run_child(["--child", "train", dataset, model, workspace, kind], home, repo)
        return train_figures(found, rows)

    if args.demo:
        runs = []
        for number in range(args.repeat):
            runs.append(train("identity", scratch / f"home-demo-{number}", 50, demo=True))
            print("demo", json.dumps(runs[-1]), flush=True)
        runs.sort(key=lambda r: r["seconds_total"])
        results["demo"] = {"median": runs[len(runs) // 2], "runs": runs}
    else:
        for rows in args.rows:
            path = data_dir / f"alpaca-{rows}.jsonl"
            if not path.is_file():
                write_rows(path, rows)
            home = scratch / f"home-{rows}"
            first = train(str(path), home, rows)
            print(rows, "first start", json.dumps(first), flush=True)
            seconds = []
            for _ in range(args.second_starts):  # a second start is short: noise from other work shows most
                seconds.append(train(str(path), home, rows))
                print(rows, "second start", json.dumps(seconds[-1]), flush=True)
            seconds.sort(key=lambda r: r["seconds_to_first_step"])
            results[str(rows)] = {
                "file_mib": round(path.stat().st_size / 2**20, 1),
                "first": first,
                "second": seconds[len(seconds) // 2],
                "second_starts": seconds,
            }
        if not args.no_preview:
            largest = data_dir / f"alpaca-{max(args.rows)}.jsonl"
            found = run_child(["--child", "preview", str(largest), model], scratch / "home-preview", repo)
            found = {k: v for k, v in found.items() if k != "started"}
            print("data tab", json.dumps(found), flush=True)
            results["data_tab"] = found
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
