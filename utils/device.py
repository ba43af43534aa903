"""Choosing the compute device from a config string."""

from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    """The requested device cannot be used here; the message is one line for the user."""


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without CUDA is an error, not a fallback.

    ``local_rank`` (set under torchrun) gives every process of a machine its own GPU:
    ``auto``/``cuda`` become ``cuda:LOCAL_RANK``, and a fixed ``cuda:N`` is refused because
    all processes would share one device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name} was asked for but this machine has no usable CUDA device")
        index = torch.device(name).index
        if local_rank is not None:
            if index is not None:
                raise DeviceError(
                    f"--device {name} pins every torchrun process to one GPU; use --device cuda "
                    "(process LOCAL_RANK uses cuda:LOCAL_RANK)"
                )
            index = local_rank
            name = f"cuda:{index}"
        if index is not None and index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(name)
