"""The workbench facade: every action the web UI offers, as a plain call (the UI is a thin layer over this).

One `Workbench` per process owns the workspace folder, the single training job and the chat engine.
Tests drive it directly; `webui/` only turns its results into components.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.access import AllowedDirs, default_roots
from core.chat.engine import ChatEngine, GenerationSettings
from core.chat.turns import ChatReply, read_reply
from core.config import RunConfig, load_yaml, yaml_text
from core.data import prepare
from core.data.formats import RowError
from core.data.images import SampleImage, open_images, thumbnail_png
from core.data.multimodal import IMAGE_TOKEN, VisionEncoder
from core.data.prepare import Checked, Peek
from core.data.readers import DEMO_DATASETS, SUPPORTED_EXTENSIONS, data_file_in
from core.data.template import IGNORE_INDEX, TemplateEncoder
from core.errors import DataError, ExportError, RunStateError
from core.estimate import MemoryEstimate, device_memory_bytes, estimate_for_run
from core.evaluation.arena import (
    Arena,
    ArenaSettings,
    ArenaView,
    auto_judge,
    judge,
    list_arenas,
    reveal,
    start_arena,
    view,
)
from core.evaluation.evaluate import EvalResult, EvalSettings, evaluate_run
from core.export import is_our_zip, merge_run, zip_merged, zip_run
from core.feedback import DEFAULT_NAME as DEFAULT_FEEDBACK
from core.feedback import FEEDBACK_DIR, FeedbackStore
from core.files import describe_reclaimed, reclaim_staging
from core.i18n import Message, message
from core.models.demo import DEMOS
from core.models.loader import check_model_reference, locate_model, reading_image_processor, reading_tokenizer
from core.ownership import has_live_owner
from core.runs import (
    CONFIG_FILE,
    HELD_OUT_FILE,
    RunInfo,
    find_run,
    list_runs,
    newest_checkpoint,
    read_log_tail,
    read_metrics,
    read_status,
    reclaim_run,
)
from core.stages import SUPERVISED
from core.suggest import suggest_stage
from core.training.distributed import node_commands, process_plan
from core.training.job import JobManager
from core.training.lifecycle import check_inputs

log = logging.getLogger("glm_workbench")
BASE_MODEL_CHOICE = "demo"
LENGTH_SAMPLE = 2_000  # samples measured for the length histogram of a large dataset
# A streamed chat reply reaches the page at most this often (its last state always): a redraw per token made the
# page re-render the whole conversation hundreds of times a reply, the cost of a fast model's long answer.
STREAM_INTERVAL_S = 0.1


@dataclass
class TokenLengths:
    """Token lengths for the histogram: of every sample, or of a random sample of them (`total` samples in all)."""

    lengths: list[int]
    total: int
    answer_starts: list[int] = field(default_factory=list)  # per sample: where its first answer token lies

    def keeping_answer(self, cutoff_len: int) -> int:
        """How many of the measured samples keep at least one answer token within `cutoff_len` (the others are
        skipped by training, which has nothing to learn from them)."""
        return sum(start < cutoff_len for start in self.answer_starts)

    @property
    def sampled(self) -> bool:
        return len(self.lengths) < self.total


@dataclass
class RunSnapshot:
    """What a page shows about one run, read from its folder."""

    name: str
    status: dict[str, Any]  # status.json, with `state` the effective one (interrupted when no one owns it)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    log_tail: str = ""

    @property
    def state(self) -> str:
        return self.status.get("state", "unknown")


class Workbench:
    def __init__(self, workspace: str | Path = "workspace", allowed_dirs: list[str | Path] | None = None):
        """`allowed_dirs`: None, any path may be used (this machine, no login); a list, every typed path must be
        inside the workspace, the workbench home, GLM_WORKBENCH_MODEL_DIRS or one of these (core/access.py)."""
        self.workspace = Path(workspace).resolve()
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.access = AllowedDirs(None if allowed_dirs is None else default_roots(self.workspace, allowed_dirs))
        self.uploads = self.workspace / "uploads"
        self.exports = self.workspace / "exports"
        self.jobs = JobManager(self.workspace)
        self.chat_engine = ChatEngine()
        self._evaluations: set[threading.Event] = set()  # one stop event per evaluation (or arena) in progress
        self.feedback = FeedbackStore(self.workspace)  # the chat's judgments: workspace/feedback/
        self.api_server = None
        # What kills left half-written (a model save, a checkpoint, a zip, a merge) is reclaimed on start.
        self.reclaim_runs()
        self.reclaim_exports()

    # ---- data -----------------------------------------------------------------------------------------------
    def dataset_choices(self) -> list[tuple[str, str]]:
        """(name shown, value) of every dataset: the demo sets, the uploaded files by file name, then the chat's
        feedback (feedback/<name>.jsonl: pairs for dpo/orpo/kto; feedback/<name>.sft.jsonl: written answers)."""
        uploaded = (
            sorted(
                p
                for p in self.uploads.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUPPORTED_EXTENSIONS
            )
            if self.uploads.is_dir()
            else []
        )
        bundles = []  # unpacked zips: a folder with its data file and images
        for folder in sorted(self.uploads.iterdir()) if self.uploads.is_dir() else []:
            if folder.is_dir() and not folder.name.startswith("."):
                try:
                    bundles.append(data_file_in(folder))
                except DataError:
                    continue
        feedback = []
        for counts in sorted(self.feedback.datasets(), key=lambda c: c.name):
            if counts.pairs:
                feedback.append((f"{FEEDBACK_DIR}/{Path(counts.path).name}", counts.path))
            if counts.sft_rows:
                feedback.append((f"{FEEDBACK_DIR}/{Path(counts.sft_path).name}", counts.sft_path))
        shown = [(p.name, str(p)) for p in uploaded] + [(str(p.relative_to(self.uploads)), str(p)) for p in bundles]
        return [(name, name) for name in DEMO_DATASETS] + shown + feedback

    def lists_version(self) -> dict[str, str]:
        """A cheap fingerprint of what the page lists, so every open page can refresh a list as soon as (and only
        when) it changes: "datasets" (uploads and feedback files: names, sizes, times) and "runs" (names, states).
        A run's progress alone does not change it: a list does not redraw under the user at every step."""
        files = []
        for folder in (self.uploads, self.feedback.root):
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    try:
                        stat = path.stat()
                    except OSError:  # removed meanwhile
                        continue
                    files.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
        runs = [f"{run.name}:{run.state}" for run in self.runs()]
        return {"datasets": hashlib.sha1("|".join(files).encode()).hexdigest(), "runs": "|".join(runs) or "-"}

    def suggest_stage(
        self, dataset: str, fmt: str = "auto", columns: str = "", model: str = "demo", method: str = "lora"
    ) -> tuple[str, float] | None:
        """(stage, learning rate) the dataset's format asks for (core/suggest.py); None if it cannot be read."""

        try:
            found = self.preview_dataset(dataset, fmt, columns).format
        except Exception:  # noqa: BLE001 - the Data tab names the problem; a suggestion just stays away
            return None
        return suggest_stage(found, model, method)

    def add_upload(self, source: str | Path, original_name: str | None = None) -> str:
        """Keep an uploaded file in the workspace so runs can refer to it later; returns its path. A file of the
        same name with other contents is never replaced: the new one gets a free name (data-2.csv)."""
        source = Path(source)
        name = re.sub(r"[^\w.\-]+", "_", Path(original_name or source.name).name).lstrip(".") or "upload"
        suffix = Path(name).suffix.lower()
        if suffix not in SUPPORTED_EXTENSIONS:
            raise DataError(
                "data.unsupported_type", name, suffix=suffix or "(none)", supported=", ".join(SUPPORTED_EXTENSIONS)
            )
        self.uploads.mkdir(parents=True, exist_ok=True)
        digest = _file_digest(source)
        stem, counter = Path(name).stem, 1
        while True:
            target = self.uploads / (name if counter == 1 else f"{stem}-{counter}{suffix}")
            if target.is_file() and _file_digest(target) == digest:
                return str(target)  # the same file uploaded again
            if not target.exists():
                handle, staging = tempfile.mkstemp(prefix=".upload-", dir=self.uploads)
                os.close(handle)
                try:
                    shutil.copyfile(source, staging)
                    os.link(staging, target)  # fails if the name was taken meanwhile: then try the next one
                    return str(target)
                except FileExistsError:
                    pass
                finally:
                    Path(staging).unlink(missing_ok=True)
            counter += 1

    def add_zip_upload(self, source: str | Path, fmt: str = "auto", columns: str = "") -> str:
        """Keep an uploaded dataset zip (a data file and its images) in the workspace: unpacked into a new folder
        named after it, checked there, and kept only if its data can be used (else nothing is left behind);
        returns the data file's path. An earlier upload of the same name is never replaced."""
        from core.data.bundles import remove_staging, unpack

        self.uploads.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.uploads))
        try:
            data = unpack(Path(source), staging)
            prepare.check(str(data), fmt, columns)
            stem = re.sub(r"[^\w.\-]+", "_", Path(source).stem).lstrip(".") or "upload"
            counter = 1
            while True:
                target = self.uploads / (stem if counter == 1 else f"{stem}-{counter}")
                counter += 1
                if not target.exists():
                    staging.rename(target)
                    return str(target / data.relative_to(staging))
        finally:
            if staging.exists():
                remove_staging(staging)

    def preview_dataset(self, dataset: str, fmt: str = "auto", columns: str = "") -> Checked:
        """The dataset read and checked (format, rows, usable rows, row problems) through the data cache: a
        large file is read once, later pages and checks come from the cache (core/data/prepare.py)."""
        self.access.check_dataset(dataset)
        return prepare.check(dataset, fmt, columns)

    def preview_upload(self, path: str, fmt: str = "auto", columns: str = "") -> Checked:
        """preview_dataset for a file the UI's upload box received (the UI checks it was uploaded): it lies in the
        upload folder, outside the allowed folders, until add_upload keeps it in the workspace."""
        return prepare.check(path, fmt, columns)

    def peek_dataset(self, dataset: str, fmt: str, columns: str, rows: int) -> Peek | None:
        """The first `rows` rows of a large file straight from the file, shown while it is checked whole; None
        when there is nothing to show before the check (a small file, or first rows the check must explain)."""
        self.access.check_dataset(dataset)
        return prepare.peek(dataset, fmt, columns, rows)

    def token_lengths(self, dataset: str, fmt: str, model: str, template: str, columns: str = "") -> TokenLengths:
        """Tokens per sample in the chat template (before truncation), for the length histogram: every sample,
        or a random sample of LENGTH_SAMPLE of them when there are more (always the same ones for a file)."""
        self.access.check_dataset(dataset)
        checked = prepare.check(dataset, fmt, columns)
        total = checked.usable_count
        positions = (
            range(total) if total <= LENGTH_SAMPLE else sorted(random.Random(0).sample(range(total), LENGTH_SAMPLE))
        )
        vision_encoder = self._vision_encoder(model)
        try:
            if vision_encoder is not None:  # image tokens count: each image as many as its resized size makes
                samples = [
                    vision_encoder.encode(c, checked.path.parent, pixels=False)
                    for c in checked.conversations(list(positions))
                ]
                encoded = [(sample["input_ids"], sample["labels"]) for sample in samples]
            else:
                encoder = TemplateEncoder(self._tokenizer(model), template)
                encoded = encoder.encode_batch(checked.conversations(list(positions)))
        except RowError as exc:  # a row the template cannot express (tool calls on GLM-4's): say which file
            raise DataError(exc.message, checked.path) from None
        starts = [
            next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels)) for _, labels in encoded
        ]
        return TokenLengths([len(input_ids) for input_ids, _ in encoded], total, starts)

    def render_sample(
        self, dataset: str, fmt: str, model: str, template: str, index: int, cutoff_len: int = 10**9, columns: str = ""
    ) -> tuple[str, list[tuple[str, bool]]]:
        """One conversation as the model will see it: (template name, [(text, carries loss), ...]).
        Consecutive tokens with the same flag are decoded together, so multi-byte characters stay whole."""
        self.access.check_dataset(dataset)
        checked = prepare.check(dataset, fmt, columns)
        position = min(max(index, 0), checked.usable_count - 1)
        conversation = checked.conversations([position])[0]
        tokenizer = self._tokenizer(model)
        vision_encoder = self._vision_encoder(model)
        try:
            if vision_encoder is not None:
                sample = vision_encoder.encode(conversation, checked.path.parent, pixels=False)
                input_ids, labels = sample["input_ids"][:cutoff_len], sample["labels"][:cutoff_len]
                used = locate_model(self._model_path(model)).vision_type
            else:
                encoder = TemplateEncoder(tokenizer, template)
                input_ids, labels = encoder.encode(conversation, cutoff_len)
                used = encoder.template.name
        except RowError as exc:
            raise DataError(exc.message, checked.path, row=int(checked.usable[position]) + 1) from None
        image_id = vision_encoder.image_token_id if vision_encoder is not None else None
        pieces: list[tuple[str, bool]] = []
        start = 0
        for end in range(1, len(input_ids) + 1):
            trains, image = labels[start] != IGNORE_INDEX, input_ids[start] == image_id
            if (
                end == len(input_ids)
                or (labels[end] != IGNORE_INDEX) != trains
                or (input_ids[end] == image_id) != image
            ):
                text = f"{IMAGE_TOKEN}×{end - start}" if image else tokenizer.decode(input_ids[start:end])
                pieces.append((text, trains))
                start = end
        return used, pieces

    def sample_images(self, dataset: str, fmt: str, model: str, index: int, columns: str = "") -> list[SampleImage]:
        """The images of one sample as the Data tab shows them beside its rendered text: a thumbnail (PNG), the
        size the image processor resizes it to, and the `<|image|>` tokens that costs (none for a text model)."""
        self.access.check_dataset(dataset)
        checked = prepare.check(dataset, fmt, columns)
        position = min(max(index, 0), checked.usable_count - 1)
        conversation = checked.conversations([position])[0]
        if not conversation.images:
            return []
        vision_encoder = self._vision_encoder(model)
        try:
            pictures = open_images(conversation, checked.path.parent)
        except RowError as exc:
            raise DataError(exc.message, checked.path, row=int(checked.usable[position]) + 1) from None
        shown = []
        for picture in pictures:
            tokens, size = 0, picture.size
            if vision_encoder is not None:
                features, counts = vision_encoder.image_features([picture])
                tokens = counts[0]
                _, height, width = (int(v) for v in features["image_grid_thw"][0])
                patch = vision_encoder.image_processor.patch_size
                size = (width * patch, height * patch)
            shown.append(SampleImage(thumbnail_png(picture), picture.size, size, tokens))
        return shown

    def _vision_encoder(self, model: str) -> VisionEncoder | None:
        """A GLM-V model's encoder for previews (its tokenizer and image processor, nothing built); None otherwise."""
        location = locate_model(self._model_path(model))
        if not location.vision_type:
            return None
        return VisionEncoder(self._tokenizer(model), reading_image_processor(location))

    def _tokenizer(self, model: str):
        """The model's tokenizer, read without preparing the model (no conversion is written for a preview)."""
        self.access.check_model(self._model_path(model))
        return reading_tokenizer(locate_model(self._model_path(model)))

    # ---- training -------------------------------------------------------------------------------------------
    def start_training(self, config: RunConfig) -> str:
        """Start a run in the background; returns its name. Raises BusyError / ConfigError / DataError /
        RunStateError. The model reference and the dataset are checked first, so what cannot be used is refused
        before a run folder exists."""
        self.access.check_config(config)
        check_inputs(config)
        return self.jobs.start(config).name

    def resume_training(self, run_name: str) -> str:
        """Continue an aborted, failed or interrupted run from its newest checkpoint, in the same run folder."""
        return self.jobs.resume(self.run_path(run_name)).name

    def continued_config(self, parent_run: str, config: RunConfig) -> RunConfig:
        """`config` set up to keep training a finished run's result (its adapter, or its full model) on new data:
        the seed's incremental learning. The parent is recorded in the new run's config.yaml."""
        parent = find_run(self.workspace, parent_run)
        if parent is None or parent.state not in ("finished", "aborted"):
            raise RunStateError("run.parent_not_finished", run=parent_run)
        parent_config = load_yaml(parent.path / CONFIG_FILE)
        common = dict(
            parent_run=parent.name, finetuning_type=parent_config.finetuning_type, template=parent_config.template
        )
        if parent.adapter_dir is not None:
            return config.replace(
                **common,
                model_name_or_path=parent_config.model_name_or_path,
                adapter_name_or_path=str(parent.adapter_dir),
            )
        if parent.model_dir is None:  # aborted before it saved anything
            raise RunStateError("run.parent_saved_nothing", run=parent.name)
        return config.replace(**common, model_name_or_path=str(parent.model_dir))

    def save_config(self, config: RunConfig) -> str:
        """Write the config as YAML under exports/configs/ (served for download), never over another file."""
        folder = self.exports / "configs"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{config.finetuning_type}"
        for counter in range(1, 1000):
            path = folder / (f"{stem}.yaml" if counter == 1 else f"{stem}-{counter}.yaml")
            try:
                with open(path, "x", encoding="utf-8") as handle:
                    handle.write(yaml_text(config))
                return str(path)
            except FileExistsError:
                continue
        raise FileExistsError(folder / stem)

    def abort_training(self) -> bool:
        return self.jobs.abort()

    def training_run(self) -> str | None:
        """The run this process is training now, if any."""
        running = self.jobs.running_run
        return running.name if running is not None else None

    def training_config(self) -> RunConfig | None:
        """The config of the run this process is training now (the form shows it after a refresh)."""
        job = self.jobs.running
        return job.config if job is not None else None

    def current_run_name(self) -> str | None:
        """The training run, or else the newest run: what the train tab shows after a page refresh."""
        running = self.training_run()
        if running is not None:
            return running
        runs = self.runs()
        return runs[0].name if runs else None

    def runs(self) -> list[RunInfo]:
        return list_runs(self.workspace)

    def runs_table(self) -> list[dict[str, Any]]:
        """One row per run for the Runs tab, as data (the page formats it): state, method, stage, model, dataset,
        steps, final and best eval loss, seconds trained (across resumes), and the error message if any."""
        rows = []
        for run in self.runs():
            status, metrics = run.status, read_metrics(run.path)
            evals = [m["eval_loss"] for m in metrics if m.get("eval_loss") is not None]
            rows.append(
                {
                    "run": run.name,
                    "state": run.state,
                    "method": status.get("method", ""),
                    "stage": status.get("stage", SUPERVISED),
                    "model": status.get("model", ""),
                    "dataset": Path(str(status.get("dataset", ""))).name,
                    "step": status.get("step", 0),
                    "max_steps": status.get("max_steps", 0),
                    "final_loss": status.get("final_loss"),
                    "best_eval_loss": min(evals) if evals else None,
                    "seconds": status.get("elapsed"),
                    "error": status.get("error") or "",
                    "error_message": status.get("error_message"),
                }
            )
        return rows

    def run_metrics(self, names: list[str]) -> dict[str, list[dict[str, Any]]]:
        return {name: read_metrics(self.run_path(name)) for name in names}

    def delete_run(self, name: str) -> None:
        """Delete a run folder of this workspace (never one that a process is training)."""
        path = self.run_path(name)
        if has_live_owner(path):
            raise RunStateError("run.delete_training", run=name)
        shutil.rmtree(path)

    def run_path(self, name: str) -> Path:
        """A run's folder, refusing anything that is not a run inside this workspace."""
        run = find_run(self.workspace, name)
        if run is None:
            raise RunStateError("run.unknown", run=name)
        return run.path

    def snapshot(self, name: str | None) -> RunSnapshot | None:
        if not name:
            return None
        path = self.run_path(name)
        run = RunInfo(path, read_status(path))
        status = {**run.status, "state": run.state}
        if run.state == "interrupted":
            checkpoint = newest_checkpoint(path)
            status["checkpoint"] = checkpoint.name if checkpoint is not None else None
        return RunSnapshot(name, status, read_metrics(path), read_log_tail(path))

    def estimate(self, config: RunConfig) -> tuple[MemoryEstimate, tuple[str, float] | None]:
        """The run's estimated peak GPU memory, and the GPU here (name, bytes) if there is one. Reads the
        model's config file only."""
        self.access.check_model(config.model_name_or_path)
        return estimate_for_run(config, on_gpu=True), device_memory_bytes()

    def process_plan(
        self, nproc: int, distributed: str = "ddp", nnodes: int = 1, master_addr: str = "", run_dir: str = "RUN_DIR"
    ) -> tuple[Message, Message | None, list[str]]:
        """What the Processes field will do on this machine and, for several machines, what to tell the others
        and each one's command (node 0's first)."""

        nproc, nnodes = max(1, int(nproc or 1)), max(1, int(nnodes or 1))
        plan = process_plan(nproc, distributed, nnodes)
        if nnodes <= 1:
            return plan, None, []
        commands = node_commands(run_dir, nnodes, nproc, master_addr.strip() or "HOST0")
        return plan, message("dist.nodes_intro", machines=nnodes), commands

    def wait_for_job(self, timeout: float | None = None) -> None:
        self.jobs.wait(timeout)

    # ---- chat -----------------------------------------------------------------------------------------------
    def runs_with_results(self) -> list[str]:
        """Finished or aborted runs that saved an adapter or a model: what can be evaluated or exported."""
        return [r.name for r in self.runs() if r.state in ("finished", "aborted") and (r.adapter_dir or r.model_dir)]

    def adapter_choices(self) -> list[str]:
        return [run.name for run in self.runs() if run.adapter_dir is not None and run.state != "running"]

    def finished_adapter_runs(self) -> list[str]:
        """Finished runs that left an adapter, newest first (side by side compares the newest two)."""
        return [run.name for run in self.runs() if run.adapter_dir is not None and run.state == "finished"]

    def base_model_choices(self) -> list[str]:
        """What the train tab's model picker offers: the demo model, models recent runs used (newest first), and
        model folders (with a config.json) in workspace/models/ and in the folders named by
        GLM_WORKBENCH_MODEL_DIRS (separated like PATH). Any other path or hub id can still be typed."""
        roots = [self.workspace / "models"] + [
            Path(p).expanduser() for p in os.environ.get("GLM_WORKBENCH_MODEL_DIRS", "").split(os.pathsep) if p
        ]
        folders = [
            str(child)
            for root in roots
            if root.is_dir()
            for child in sorted(root.iterdir())
            if (child / "config.json").is_file()
        ]
        recent = [str(run.status.get("model") or "") for run in self.runs()]
        choices: list[str] = []
        for choice in [*DEMOS, *recent, *folders]:
            if choice and choice not in choices:
                choices.append(choice)
        return choices

    def model_choices(self) -> list[str]:
        """The demo models plus every full fine-tuning run's model folder."""
        return [*DEMOS] + [run.name for run in self.runs() if run.model_dir is not None]

    def _model_path(self, model: str) -> str:
        if model in ("", BASE_MODEL_CHOICE):
            return BASE_MODEL_CHOICE
        if model in DEMOS:
            return model
        run = find_run(self.workspace, model)
        return str(run.model_dir) if run is not None and run.model_dir is not None else model

    def chat_stream(
        self,
        messages: list[dict[str, str]],
        model: str = BASE_MODEL_CHOICE,
        adapter_run: str | None = None,
        system: str = "",
        settings: GenerationSettings | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[str]:
        """Stream a reply from the base model, or with a finished run's adapter hot-loaded onto it. A model of the
        GLM-4.5 generation's reply keeps its `<think>` / `<tool_call>` markup (see chat_replies)."""
        model_path = self._model_path(model)
        self.access.check_model(model_path)
        check_model_reference(model_path)  # a missing model is named here, before anything streams
        adapter = None
        if adapter_run:
            run = find_run(self.workspace, adapter_run)
            if run is None or run.adapter_dir is None:
                raise RunStateError("run.no_adapter", run=adapter_run)
            adapter = (run.name, str(run.adapter_dir))
        yield from self.chat_engine.stream(messages, system, adapter, settings, model=model_path, tools=tools)

    def chat_replies(
        self,
        messages: list[dict[str, Any]],
        model: str = BASE_MODEL_CHOICE,
        adapter_run: str | None = None,
        system: str = "",
        settings: GenerationSettings | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[ChatReply]:
        """chat_stream taken apart as it grows (core/chat/turns.py), at most every STREAM_INTERVAL_S: reasoning (with
        its length in tokens), answer and, once whole, the tool calls. `tools` are offered only to a model whose
        template lists them; the last reply says `tools_ignored` when a plain model got some."""

        engine = self.chat_engine
        model_path = self._model_path(model)
        self.access.check_model(model_path)
        check_model_reference(model_path)
        engine.load_model(model_path)  # its template decides how replies read and whether tools fit
        form = engine.reading(settings.enable_thinking if settings is not None else True)
        offered = tools if engine.takes_tools else None

        def count(text: str) -> int:
            return len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])

        text, shown_at = "", 0.0
        for text in self.chat_stream(messages, model, adapter_run, system, settings, offered):
            now = time.monotonic()
            if now - shown_at >= STREAM_INTERVAL_S:  # coalesced: the page redraws 10 times a second, not per token
                shown_at = now
                yield read_reply(text, form, False, count)
        last = read_reply(text, form, True, count)
        last.tools_ignored = bool(tools) and offered is None
        yield last

    # ---- feedback: the chat's judgments, kept as preference data (core/feedback.py) ----------------------------------
    def record_judgment(
        self,
        messages: list[dict[str, str]],
        first: str,
        second: str,
        judgment: str,
        first_run: str = "",
        second_run: str = "",
        system: str = "",
        feedback: str = DEFAULT_FEEDBACK,
    ) -> dict[str, Any]:
        """The person's verdict on two answers to `messages` (the chat up to the user's last turn): "better" (the
        first answer is better), "worse" or "tie". `first_run` / `second_run` name the runs that wrote them ("" for
        the base model). Appended to feedback/<feedback>.jsonl (ties: feedback/<feedback>.ties.jsonl); returns
        the dataset's counts (FeedbackCounts.to_dict()). Raises DataError for an empty answer or conversation."""
        return self.feedback.record(
            feedback, messages, first, second, judgment, first_run, second_run, system
        ).to_dict()

    def record_column_judgment(
        self,
        messages: list[dict[str, str]],
        answers: list[str],
        runs: list[str],
        column: int,
        judgment: str,
        system: str = "",
        feedback: str = DEFAULT_FEEDBACK,
        tools: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Side by side's vote under column `column` (0-based): "better", "worse" or "tie" against each other column
        whose answer differs. `runs` name the columns' runs ("" for the base model); answers that think or call
        tools come in their markup (core/chat/turns.reply_markup), with the `tools` offered. Returns the counts."""
        return self.feedback.record_column(feedback, messages, answers, runs, column, judgment, system, tools).to_dict()

    def record_written_answer(
        self,
        messages: list[dict[str, str]],
        written: str,
        shown: list[str],
        shown_runs: list[str] | None = None,
        system: str = "",
        feedback: str = DEFAULT_FEEDBACK,
        tools: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The right answer, written by the person ("write the right answer"): `written` beats each answer in
        `shown` (one pair each, `shown_runs` naming who wrote them) and becomes an SFT row in
        feedback/<feedback>.sft.jsonl. Returns the counts."""
        return self.feedback.record_written(feedback, messages, written, shown, shown_runs, system, tools).to_dict()

    def feedback_datasets(self) -> list[dict[str, Any]]:
        """Every feedback dataset, newest first: name, path (the pairs file, a dataset for dpo/orpo/kto), pairs,
        ties, sft_rows, sft_path (an alpaca dataset for SFT, "" until there is one), ties_path, updated."""
        return [counts.to_dict() for counts in self.feedback.datasets()]

    # ---- arena: two models, blind judging (core/evaluation/arena.py) ------------------------------------------------
    def arena_start(
        self,
        first_run: str,
        dataset: str,
        second_run: str = "",
        fmt: str = "auto",
        settings: ArenaSettings | None = None,
    ) -> ArenaView:
        """`first_run` and `second_run` (a finished run, or "" for the first run's base model) answer the dataset's
        prompts; the arena is kept in the first run's folder (eval/arena-<id>.json). Long (both models generate);
        Abort (abort_evaluation) keeps the items both answered. Returns the blind view."""

        self.access.check_dataset(dataset)
        first = self._result_run(first_run)
        second = self._result_run(second_run) if second_run else None
        stop = threading.Event()
        self._evaluations.add(stop)
        try:
            return view(start_arena(first, second, dataset, fmt, settings, stop_event=stop))
        finally:
            self._evaluations.discard(stop)

    def arena_view(self, run: str, arena_id: str) -> ArenaView:
        return view(Arena.load(self.run_path(run), arena_id))

    def arena_judge(self, run: str, arena_id: str, index: int, verdict: str) -> ArenaView:
        """The person's verdict on item `index` as shown: "left", "right" or "tie". Refused once revealed."""
        return view(judge(self.run_path(run), arena_id, index, verdict))

    def arena_reveal(self, run: str, arena_id: str) -> ArenaView:
        """Show the names and the person's score now; the arena takes no more verdicts."""
        return view(reveal(self.run_path(run), arena_id))

    def arena_auto_judge(self, run: str, arena_id: str) -> ArenaView:
        """Judge every item by ChatGLM's ROUGE-L against its reference answer (the "rouge-l" score)."""
        return view(auto_judge(self.run_path(run), arena_id))

    def arenas(self, run: str) -> list[dict[str, Any]]:
        """The run's arenas, newest first: id, dataset, total, judged, revealed (and first/second once shown)."""
        return [
            {key: value for key, value in view(arena).to_dict().items() if key != "items"}
            for arena in list_arenas(self.run_path(run))
        ]

    def _result_run(self, name: str) -> Path:
        run = find_run(self.workspace, name)
        if run is None or (run.adapter_dir is None and run.model_dir is None):
            raise RunStateError("run.nothing_to_evaluate", run=name)
        return run.path

    # ---- OpenAI-compatible API ----------------------------------------------------------------------------
    def start_api(
        self,
        model: str = BASE_MODEL_CHOICE,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        max_queue: int | None = None,
    ) -> str:
        """Serve the chat engine's model and every finished run's adapter as an OpenAI-compatible API."""
        from core.api import MAX_QUEUE, ApiServer, create_api

        self.access.check_model(self._model_path(model))
        self.stop_api()
        self.chat_engine.load_model(self._model_path(model))

        def adapters() -> dict[str, str]:  # read per request: runs that finish later are served too
            return {
                run.name: str(run.adapter_dir)
                for run in self.runs()
                if run.adapter_dir is not None and run.state in ("finished", "aborted")
            }

        app = create_api(
            self.chat_engine, model, adapters, api_key, max_queue=MAX_QUEUE if max_queue is None else max_queue
        )
        self.api_server = ApiServer(app, host, port).start()
        return self.api_server.url

    def stop_api(self) -> None:
        if getattr(self, "api_server", None) is not None:
            self.api_server.stop()
            self.api_server = None

    # ---- evaluation -----------------------------------------------------------------------------------------
    def evaluate(
        self, run_name: str, dataset: str, fmt: str = "auto", settings: EvalSettings | None = None
    ) -> EvalResult:
        """Loss, perplexity and ChatGLM's BLEU/ROUGE of a finished run on a dataset (written to RUN/eval/)."""
        self.access.check_dataset(dataset)
        run = find_run(self.workspace, run_name)
        if run is None or (run.adapter_dir is None and run.model_dir is None):
            raise RunStateError("run.nothing_to_evaluate", run=run_name)
        stop = threading.Event()
        self._evaluations.add(stop)
        try:
            return evaluate_run(run.path, dataset, fmt, settings, stop_event=stop)
        finally:
            self._evaluations.discard(stop)

    def run_datasets(self, run_name: str) -> tuple[str, str]:
        """(training dataset, held-out data or "") of a run, from its config.yaml: its eval dataset, else the rows
        its val_size kept out (held_out.jsonl in the run folder). Evaluate and the Arena start on the held-out data
        (prompts it never learned from), and say so when they score training data. ("", "") for a run without a
        readable config."""
        run = find_run(self.workspace, run_name)
        try:
            config = load_yaml(run.path / CONFIG_FILE) if run is not None else None
        except Exception:  # noqa: BLE001 - an unreadable config: nothing known about its data
            config = None
        if config is None:
            return "", ""
        held_out = run.path / HELD_OUT_FILE
        return config.dataset, config.eval_dataset or (str(held_out) if held_out.is_file() else "")

    def abort_evaluation(self) -> bool:
        """Stop every evaluation and arena in progress (each keeps what it finished); False if none was running."""
        running = list(self._evaluations)
        for stop in running:
            stop.set()
        return bool(running)

    # ---- export ---------------------------------------------------------------------------------------------
    def export_zip(self, run_name: str) -> str:
        """The run's zip in exports/ (made again each time; another file of the same name is left alone)."""
        path = self.run_path(run_name)
        target = self.exports / f"{path.name}.zip"
        counter = 1
        while target.exists() and not is_our_zip(target):
            counter += 1
            target = self.exports / f"{path.name}-{counter}.zip"
        try:
            return str(zip_run(path, target, overwrite=True))
        finally:
            self.reclaim_exports()

    def reclaim_exports(self) -> list[tuple[str, int]]:
        """Remove what zips and merges killed half-way left in exports/ (when no export is being written)."""
        removed = reclaim_staging(self.exports)
        if removed:
            log.warning("reclaimed staging leftovers in %s: %s", self.exports, describe_reclaimed(removed))
        return removed

    def reclaim_runs(self) -> list[tuple[str, int]]:
        """Remove the staging leftovers of every run that no process owns (a save or checkpoint cut short by a
        kill), saying so in the run's log.txt."""
        removed = []
        for run in list_runs(self.workspace):
            removed += reclaim_run(run.path)
        return removed

    def merge_run(
        self, run_name: str, target: str, dtype: str = "auto", max_shard_size: str = "2GB", overwrite: bool = False
    ) -> str:
        """Merge a LoRA run into its base, into a new or empty folder of the user's choice (with `overwrite`,
        an earlier merge of ours there may be replaced; nothing else ever is)."""
        if not target.strip():
            raise ExportError("export.choose_folder")
        self.access.check(Path(target).expanduser(), "merge_target")
        try:
            return str(merge_run(self.run_path(run_name), Path(target).expanduser(), dtype, max_shard_size, overwrite))
        finally:
            self.reclaim_exports()

    def merged_zip(self, folder: str) -> str:
        """A merged model folder (written by merge_run) as exports/<folder name>.zip, for the browser to download."""
        source = Path(folder).expanduser()
        self.access.check(source, "merge_target")
        try:
            return str(zip_merged(source, self.exports / f"{source.name}.zip"))
        finally:
            self.reclaim_exports()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
