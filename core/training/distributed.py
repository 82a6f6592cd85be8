"""The same run on several processes (GPUs, or CPU cores with gloo) through torchrun, followed like a local run.

The launcher writes nothing itself: rank 0 of the worker writes status.json, metrics.jsonl and log.txt exactly
as a single-process run does, so the UI's chart, progress and Abort (a STOP file) work unchanged.
For FSDP and DeepSpeed ZeRO, `accelerate_config` writes a config for `accelerate launch`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.errors import config_error
from core.i18n import Message, message
from core.ownership import RunLock
from core.runs import LOG_FILE, STOP_FILE, read_status, update_status


def torchrun_command(run_dir: str | Path, nproc: int, resume: bool = False) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "core.training.worker",
        str(run_dir),
    ]
    return command + (["--resume"] if resume else [])


def node_commands(run_dir: str | Path, nnodes: int, nproc: int, master_addr: str, port: int = 29500) -> list[str]:
    """The command each machine of a several-machine run types, node 0 first: the same torchrun with its own
    --node_rank, every node meeting at `master_addr:port` (node 0's address, reachable from the others). Each
    machine needs the workbench, the model and the data at the paths config.yaml names, and RUN_DIR holding that
    config.yaml; only node 0's RUN_DIR is written (Abort: a STOP file there stops every node). The static
    rendezvous keeps node 0 rank 0 (c10d's would rank the machines by address, so another machine's folder
    could become the one written)."""
    import shlex

    return [
        " ".join(
            [
                "torchrun",
                f"--nnodes {nnodes}",
                f"--nproc_per_node {nproc}",
                f"--node_rank {rank}",
                "--rdzv_backend static",
                f"--master_addr {master_addr}",
                f"--master_port {port}",
                "-m core.training.worker",
                shlex.quote(str(run_dir)),
            ]
        )
        for rank in range(nnodes)
    ]


def process_plan(nproc: int, distributed: str = "ddp", nnodes: int = 1) -> Message:
    """What `nproc_per_node` processes will do on this machine: on its GPUs with nccl, or as CPU processes with
    gloo sharing its cores; said before the run starts (the train tab, `glm-workbench nodes`)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cores = os.cpu_count() or 1
    mode = "FSDP" if distributed == "fsdp" else "DDP"
    if nproc <= 1 and nnodes <= 1:
        return message("dist.plan_single_gpu", gpus=gpus) if gpus else message("dist.plan_single_cpu", cores=cores)
    total = nproc * nnodes
    if gpus:
        if nproc > gpus:
            return message("dist.plan_too_many_gpus", processes=nproc, gpus=gpus)
        return message("dist.plan_gpu", processes=nproc, gpus=gpus, mode=mode, total=total, machines=nnodes)
    return message(
        "dist.plan_cpu" if nproc <= cores else "dist.plan_cpu_oversubscribed",
        processes=nproc,
        cores=cores,
        each=max(1, cores // nproc),
        mode=mode,
        total=total,
        machines=nnodes,
    )


def run_distributed(
    run_dir: str | Path, nproc: int, lock: RunLock, resume: bool = False, stop_event: threading.Event | None = None
) -> dict:
    """Run the workers to the end; an abort request becomes the STOP file every rank checks. This process owns
    the run (`lock`) for its workers: they are told so and do not take the lock themselves."""
    run_dir = Path(run_dir)
    environment = {**os.environ, **lock.worker_environment()}
    with open(run_dir / f"{LOG_FILE}.workers", "a", encoding="utf-8") as output:
        process = subprocess.Popen(
            torchrun_command(run_dir, nproc, resume), stdout=output, stderr=subprocess.STDOUT, env=environment
        )
        while process.poll() is None:
            if stop_event is not None and stop_event.is_set():
                (run_dir / STOP_FILE).touch()
            time.sleep(0.3)
    status = read_status(run_dir)
    if process.returncode != 0 and status.get("state") not in ("finished", "aborted", "failed"):
        tail = (run_dir / f"{LOG_FILE}.workers").read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
        problem = message("run.workers_failed", processes=nproc, code=process.returncode, tail=" | ".join(tail))
        status = update_status(
            run_dir,
            last_resort=True,
            state="failed",
            finished=time.time(),
            error=str(problem),
            error_message=problem.to_json(),
        )
    return status


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def decoder_layer_classes(model) -> list[str]:
    """The class names FSDP wraps one by one: the model's own undivisible blocks (GlmDecoderLayer,
    Glm4DecoderLayer, Glm1Block), found inside a PEFT wrapper too."""
    names = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    present = {type(module).__name__ for module in model.modules()}
    return sorted(names & present)


def fsdp_arguments(config, model) -> dict:
    """transformers' own FSDP2 settings for a run with `distributed: fsdp` on several processes; {} otherwise.
    Each decoder layer is one FSDP unit; checkpoints and the run's output gather the full state dict, so the
    adapter/ or model/ folder is the same as a single process writes."""
    if config.distributed != "fsdp" or world_size() <= 1:
        return {}
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": decoder_layer_classes(model),
            "state_dict_type": "FULL_STATE_DICT",
            "reshard_after_forward": True,
            "cpu_ram_efficient_loading": False,
        },
    }


ACCELERATE_KINDS = ("fsdp", "zero2", "zero3")


def accelerate_config(kind: str, num_processes: int, num_machines: int = 1, mixed_precision: str = "bf16") -> dict:
    """An `accelerate launch --config_file` config for FSDP or DeepSpeed ZeRO-2/3."""
    if kind not in ACCELERATE_KINDS:
        raise config_error("--kind", "config.one_of", value=kind, show_value=True, choices=", ".join(ACCELERATE_KINDS))
    base = {
        "compute_environment": "LOCAL_MACHINE",
        "machine_rank": 0,
        "main_training_function": "main",
        "mixed_precision": mixed_precision,
        "num_machines": num_machines,
        "num_processes": num_processes,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }
    if kind == "fsdp":
        return {
            **base,
            "distributed_type": "FSDP",
            "fsdp_config": {
                "fsdp_version": 2,
                "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                "fsdp_transformer_layer_cls_to_wrap": "GlmDecoderLayer,Glm4DecoderLayer",
                "fsdp_state_dict_type": "SHARDED_STATE_DICT",
                "fsdp_cpu_ram_efficient_loading": True,
                "fsdp_offload_params": False,
                "fsdp_reshard_after_forward": True,
            },
        }
    stage = 2 if kind == "zero2" else 3
    deepspeed = {
        "zero_stage": stage,
        "offload_optimizer_device": "none",
        "offload_param_device": "none",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero3_init_flag": stage == 3,
    }
    if stage == 3:
        deepspeed["zero3_save_16bit_model"] = True
    return {**base, "distributed_type": "DEEPSPEED", "deepspeed_config": deepspeed}


def accelerate_command(config_file: str | Path, run_dir: str | Path) -> str:
    return f"accelerate launch --config_file {config_file} -m core.training.worker {run_dir}"
