"""GLM Workbench's engine. Never imports gradio: the web UI, the CLI and the tests all call this package."""

import importlib.util
import logging
import os
import warnings

# bitsandbytes tries to fetch an optional CPU kernel from a model hub at import time and warns when it cannot;
# the workbench runs offline by design, so that warning is noise for our users.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# peft calls a transformers property that transformers 5 renamed; harmless, and shown on every adapter load.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
# bitsandbytes' 8-bit matmul logs a cast warning on every call; it says nothing the user can act on.
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)

# accelerate imports DeepSpeed whenever it is installed, and DeepSpeed then prints "Setting accelerator to CPU"
# on stdout (into a CLI chat's answer) on machines without an NVIDIA driver. There the CPU is what its
# detection would pick anyway, so naming it up front keeps the output clean and changes nothing else.
if not os.path.exists("/proc/driver/nvidia") and importlib.util.find_spec("deepspeed") is not None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

# OpenMP's worker threads spin while they wait for each other. On cores that other processes also use, the
# spinning starves the very thread being waited for: a demo-size training step with torch's 2 threads took 15.6 s
# instead of 0.9 s beside 4 busy processes on 2 cores; waiting passively, 2.6 s (1 thread: 3.0 s). Read when torch
# loads its OpenMP runtime, so it is set here, before any module of the workbench imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
