"""Which floating-point precision to compute in, by what the device does natively.

bf16 autocast is a large win where the hardware computes bf16 (CUDA GPUs since Ampere; CPUs with
AVX-512 BF16 or AMX tiles) and a large loss where it is emulated: on a 2-core AMD EPYC with AVX2 only,
a (4096 x 128) @ (128 x 512) matmul ran 53x slower in bf16 than in fp32 (docs/benchmarks.md). Every
"auto" precision in mar3d (training, latent caching, reconstruction, generation) is decided here.
torch is imported inside the functions, so that command lines can offer the choices without loading it.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISION_CHOICES = ("auto", "fp32", "bf16")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX-512 BF16 or AMX tiles)."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes (private)
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def native_bf16(device: str | torch.device) -> bool:
    """Whether bf16 autocast on ``device`` runs on native bf16 hardware."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_fast_bf16()


def autocast_dtype(choice: str, device: str | torch.device) -> torch.dtype:
    """"fp32" / "bf16" as named; "auto": bf16 where the device computes it natively, else fp32."""
    import torch

    if choice not in PRECISION_CHOICES:
        raise ValueError(f"dtype must be one of {', '.join(PRECISION_CHOICES)}, got {choice!r}")
    if choice == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return torch.float32 if choice == "fp32" else torch.bfloat16


def autocast_for(device: torch.device, dtype: torch.dtype):
    """bf16/fp16 autocast on the device, or nothing for fp32."""
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def training_precision(choice: str) -> str:
    """A Lightning precision: "auto" is "bf16-mixed" where the training device (a GPU when there is one,
    as Lightning picks it, else the CPU) computes bf16 natively, else "32-true"; others pass through."""
    import torch

    if choice != "auto":
        return choice
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return "bf16-mixed" if native_bf16(device) else "32-true"
