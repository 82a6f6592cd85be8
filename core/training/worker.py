"""One process of a multi-process run: `torchrun --nproc_per_node N -m core.training.worker RUN_DIR [--resume]`.

Every rank reads RUN_DIR/config.yaml and trains through the same TrainingSession; transformers' Trainer sees the
torchrun environment and wraps the model in DDP. Only rank 0 writes the run folder. Started by the workbench,
the launcher owns the run for its workers; started by hand (several machines), rank 0 takes the run itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core.config import load_yaml
from core.errors import WorkbenchError
from core.i18n import default_language


def main(argv: list[str] | None = None) -> int:
    import torch

    from core.runs import CONFIG_FILE
    from core.training.runner import TrainingSession

    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = int(os.environ.get("GLM_WORKBENCH_THREADS", "0")) or os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // local_processes))  # the cores (or GLM_WORKBENCH_THREADS), shared out
    try:
        status = TrainingSession(load_yaml(run_dir / CONFIG_FILE), run_dir, resume="--resume" in argv).run()
    except WorkbenchError as exc:  # the run is another process's, or cannot resume
        print(f"error: {exc.render(default_language())}", file=sys.stderr)
        return 2
    return 0 if status.get("state") in ("finished", "aborted") else 1


if __name__ == "__main__":
    sys.exit(main())
