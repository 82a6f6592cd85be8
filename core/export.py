"""Package a finished run for download: a zip whose root is a loadable PEFT adapter (or model) folder; or a
LoRA merged into its base. Both are written under a temporary name and renamed into place; an existing zip or a
non-empty folder is refused, unless it is an earlier export of ours and the caller asks to overwrite it."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from core.config import load_yaml
from core.errors import ExportError, RunStateError
from core.files import STAGING_TAG, held, reclaim_staging
from core.i18n import message
from core.models.loader import DTYPES, load_model, load_tokenizer, locate_model, pick_device, pick_dtype, prepare_model
from core.models.vision import load_image_processor
from core.runs import ADAPTER_CONFIG, ADAPTER_DIR, CONFIG_FILE, METRICS_FILE, MODEL_DIR

ZIP_COMMENT = b"glm-workbench export"  # marks our zips: only these are ever replaced
MERGED_KIND = "merged-model"


def is_our_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.comment == ZIP_COMMENT
    except (OSError, zipfile.BadZipFile):
        return False


def run_output_dir(run_dir: str | Path) -> Path:
    """The run's adapter/ (LoRA) or model/ (full) folder."""
    run_dir = Path(run_dir)
    for name, marker in ((ADAPTER_DIR, ADAPTER_CONFIG), (MODEL_DIR, "config.json")):
        if (run_dir / name / marker).is_file():
            return run_dir / name
    raise ExportError("export.nothing_saved", run=run_dir.name)


def zip_run(run_dir: str | Path, zip_path: str | Path, overwrite: bool = False) -> Path:
    """Zip the adapter/model files at the archive root, plus the run's config.yaml and metrics.jsonl.

    Unzipped, the folder loads with `PeftModel.from_pretrained` (or `from_pretrained` for a full model).
    Written under a temporary name first so a half-written zip is never served. An existing file is replaced
    only with `overwrite`, and only if it is a zip of ours.
    """
    run_dir, zip_path = Path(run_dir), Path(zip_path)
    output = run_output_dir(run_dir)
    if zip_path.exists() and not (overwrite and is_our_zip(zip_path)):
        code = "files.target_exists_overwrite" if is_our_zip(zip_path) else "files.target_exists"
        raise RunStateError(code, folder=str(zip_path))
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{zip_path.name}.{STAGING_TAG}", suffix=".partial", dir=zip_path.parent)
    os.close(handle)
    try:
        with held(Path(partial)):  # a reclaim of leftovers (core/files.py) leaves it alone while we live
            _write_zip(run_dir, output, partial)
        os.replace(partial, zip_path)
    finally:
        Path(partial).unlink(missing_ok=True)
    reclaim_staging(zip_path.parent, zip_path.name)  # earlier attempts at this zip that a kill cut short
    return zip_path


# How to load an export, for its model card (code, not a sentence: the same in every language).
LOAD_ADAPTER = """```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{base}")
tokenizer = AutoTokenizer.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "path/to/this/unzipped/folder")
```"""
LOAD_MODEL = """```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("path/to/this/unzipped/folder")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/unzipped/folder")
```"""


def loading_code(base: str, adapter: bool, with_images: bool) -> str:
    """The model card's loading snippet; a GLM-V model loads through its image-text class with its image processor
    (AutoProcessor would also build the video processor, which needs torchvision)."""
    code = LOAD_ADAPTER.format(base=base) if adapter else LOAD_MODEL
    if not with_images:
        return code
    source = base if adapter else "path/to/this/unzipped/folder"
    code = code.replace("AutoModelForCausalLM", "AutoModelForImageTextToText")
    code = code.replace("AutoTokenizer\n", "AutoImageProcessor, AutoTokenizer\n", 1)
    return code.replace("\n```", f'\nimage_processor = AutoImageProcessor.from_pretrained("{source}")\n```')


def base_model_name(model: str) -> str:
    """The base model as a reader elsewhere can find it: a hub name as given, a local folder by its name (the
    server's absolute path means nothing on another machine)."""
    return Path(model).name if Path(model).is_absolute() else model


def model_card(run_dir: Path, output: Path) -> str:
    """README.md for the zip: base model by name, method and stage, data, steps, the final and best eval loss,
    and how to load it (in English, as model cards on the hub are)."""
    from core.runs import read_metrics, read_status

    config = load_yaml(run_dir / CONFIG_FILE)
    status = read_status(run_dir)
    evals = [m["eval_loss"] for m in read_metrics(run_dir) if m.get("eval_loss") is not None]
    base = base_model_name(config.model_name_or_path)
    adapter = output.name == ADAPTER_DIR
    final, best = status.get("final_loss"), min(evals) if evals else None
    return message(
        "export.model_card_adapter" if adapter else "export.model_card_model",
        name=run_dir.name,
        base=base,
        method=config.finetuning_type,
        stage=config.stage,
        dataset=Path(config.dataset).name,
        eval_dataset=Path(config.eval_dataset).name if config.eval_dataset else "-",
        steps=f"{status.get('step', 0)}/{status.get('max_steps', 0)}",
        epochs=config.num_train_epochs,
        learning_rate=config.learning_rate,
        cutoff_len=config.cutoff_len,
        final_loss=f"{final:.4g}" if isinstance(final, (int, float)) else "-",
        best_eval_loss=f"{best:.4g}" if best is not None else "-",
        template=config.template,
        load=loading_code(base, adapter, bool(locate_model(config.model_name_or_path).vision_type)),
        command="glm-workbench train config.yaml",
    ).render("en")


def _portable_adapter_config(path: Path, base: str) -> bytes:
    """adapter_config.json with the base model by the name it was chosen by, not the training machine's path."""
    import json

    data = json.loads(path.read_text(encoding="utf-8"))
    if "base_model_name_or_path" in data:
        data["base_model_name_or_path"] = base
    return json.dumps(data, indent=2, ensure_ascii=False).encode()


def _write_zip(run_dir: Path, output: Path, partial: str) -> None:
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(output.rglob("*")):
            if not file.is_file() or file.name.startswith(".glm_workbench"):
                continue
            name = file.relative_to(output).as_posix()
            if name == "README.md":  # peft's empty card ("[More Information Needed]"): ours is written below
                continue
            if name == ADAPTER_CONFIG and (run_dir / CONFIG_FILE).is_file():
                base = base_model_name(load_yaml(run_dir / CONFIG_FILE).model_name_or_path)
                archive.writestr(name, _portable_adapter_config(file, base))
            else:
                archive.write(file, name)
        if (run_dir / CONFIG_FILE).is_file():
            archive.writestr("README.md", model_card(run_dir, output))
        for extra in (CONFIG_FILE, METRICS_FILE):
            if (run_dir / extra).is_file():
                archive.write(run_dir / extra, extra)
        archive.comment = ZIP_COMMENT


def zip_merged(folder: str | Path, zip_path: str | Path) -> Path:
    """A merged model folder (ours: merge_run wrote it) as a zip to download, its files at the root; stored, not
    compressed (weights do not shrink, and deflating gigabytes would hold the download for minutes)."""
    from core.files import output_kind

    folder, zip_path = Path(folder), Path(zip_path)
    if not folder.is_dir() or output_kind(folder) != MERGED_KIND:  # only a merge of ours is zipped
        raise ExportError("export.nothing_saved", run=folder.name)
    if zip_path.exists() and not is_our_zip(zip_path):
        raise RunStateError("files.target_exists", folder=str(zip_path))
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{zip_path.name}.", suffix=".partial", dir=zip_path.parent)
    os.close(handle)
    try:
        with held(Path(partial)):
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
                for file in sorted(folder.rglob("*")):
                    if file.is_file() and not file.name.startswith(".glm_workbench"):
                        archive.write(file, file.relative_to(folder).as_posix())
                archive.comment = ZIP_COMMENT
        os.replace(partial, zip_path)
    finally:
        Path(partial).unlink(missing_ok=True)
    return zip_path


def merge_run(
    run_dir: str | Path, target: str | Path, dtype: str = "auto", max_shard_size: str = "2GB", overwrite: bool = False
) -> Path:
    """Merge a LoRA adapter into its full-precision base and save a standalone model folder.

    The base is loaded unquantized even for a 4-bit-trained adapter (it applies to the full-precision weights).
    Written into a staging folder beside `target`, renamed into place when complete. `target` must be new or
    empty; with `overwrite`, an earlier merge of ours there is replaced, and never anything else.
    """
    import json

    from peft import PeftModel

    from core.files import TargetNotFreeError, check_target_free, refusal, staged_dir

    run_dir, target = Path(run_dir), Path(target)
    output = run_output_dir(run_dir)
    if output.name != ADAPTER_DIR:
        raise ExportError("export.already_complete", run=run_dir.name, folder=str(output))
    adapter_type = json.loads((output / ADAPTER_CONFIG).read_text()).get("peft_type")
    if adapter_type != "LORA":
        raise ExportError("export.not_mergeable", run=run_dir.name, kind=adapter_type)
    if dtype not in DTYPES:
        raise ExportError("export.dtype", choices=", ".join(DTYPES))
    replace = "ours" if overwrite else "never"
    try:
        check_target_free(target, MERGED_KIND, replace)  # refuse before the slow part, not after it
    except TargetNotFreeError as exc:
        raise refusal(exc) from None
    config = load_yaml(run_dir / CONFIG_FILE)
    base_path = prepare_model(config.model_name_or_path)
    device = pick_device()
    model = load_model(base_path, dtype=pick_dtype(dtype, device) if dtype != "auto" else pick_dtype("auto", device))
    merged = PeftModel.from_pretrained(model, str(output)).merge_and_unload()
    try:
        with staged_dir(target, kind=MERGED_KIND, replace=replace) as folder:
            merged.save_pretrained(folder, max_shard_size=max_shard_size)
            load_tokenizer(base_path).save_pretrained(folder)
            if locate_model(base_path).vision_type:  # a GLM-V model: its image processor, as the run trained with it
                processor_from = output if (output / "preprocessor_config.json").is_file() else Path(base_path)
                load_image_processor(processor_from).save_pretrained(folder)
    except TargetNotFreeError as exc:
        raise refusal(exc) from None
    reclaim_staging(target.parent, target.name)  # earlier merges into this folder that a kill cut short
    return target
