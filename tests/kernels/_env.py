"""Where the kernel tests run: a CUDA device when there is one, else the Triton interpreter on
CPU. Imported before anything imports triton (TRITON_INTERPRET is read when kernels are built)."""

import os

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"
