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

# OpenMP's worker threads spin a while before they sleep when they wait for each other. On a quiet machine the spin
# is what keeps small steps fast: waiting passively (OMP_WAIT_POLICY=PASSIVE, what this set before) made the default
# demo run (52 steps) take 6.1 s instead of 3.7 s. Beside busy processes a long spin starves the very thread being
# waited for: 8 demo steps took 10.6 s spinning as long as GNU OpenMP likes, 4.1-4.7 s passive. A short spin
# (GOMP_SPINCOUNT=3000; torch's CPU build runs GNU OpenMP) keeps both: 3.7 s quiet, 4.9 s beside 4 busy processes
# on 2 cores. Read when torch loads OpenMP, so it is set here, before any module of the workbench imports torch,
# and left alone where the user chose a policy or a spin count.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "3000")
