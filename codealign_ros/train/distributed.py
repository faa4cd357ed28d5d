"""Device choice, mixed precision and torchrun data parallelism for the training loop.

One process per device (the HEAL / OpenCOOD convention): `torchrun --nproc_per_node N` sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; `setup` joins the process group
(env:// init, NCCL on CUDA, gloo on CPU). Outside torchrun everything is a 1-process no-op.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from codealign_ros.errors import CodeAlignError

LOG = logging.getLogger("codealign.train")
DEVICES = ("auto", "cpu", "cuda")


class DeviceError(CodeAlignError, RuntimeError):
    """A requested device or precision is not available here (one clear line)."""

    reason: str = "device"


@dataclass(frozen=True)
class Accel:
    """Where and how a process trains: device, autocast dtype (None: fp32), rank / world."""

    device: torch.device = torch.device("cpu")
    amp_dtype: torch.dtype | None = None
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, components, cards and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def describe(self) -> str:
        """Human-readable device line for model cards."""
        name = torch.cuda.get_device_name(self.device) if self.cuda else \
            f"{os.cpu_count()}-core CPU, {torch.get_num_threads()} torch thread(s)"
        amp = f", AMP {str(self.amp_dtype).replace('torch.', '')}" if self.amp_dtype else ""
        return f"{self.world} x {name}{amp}" if self.distributed else f"{name}{amp}"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` (CUDA when present), `cpu` or `cuda`; `cuda` without CUDA is a DeviceError."""
    if name not in DEVICES:
        raise DeviceError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda: CUDA is not available on this machine "
                              f"(torch {torch.__version__}, built with CUDA "
                              f"{torch.version.cuda or 'none'}); use --device cpu or auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """Autocast dtype for `--amp`: bf16 where the GPU has it, else fp16 (with a grad scaler);
    None (full precision) when off or on the CPU, where `--amp` is ignored with a message."""
    if not amp:
        return None
    if device.type != "cuda":
        LOG.warning("--amp ignored: mixed precision is for CUDA; training on %s in fp32", device)
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def setup(device: str = "auto", amp: bool = False) -> Accel:
    """Join the torchrun process group when WORLD_SIZE > 1 and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method="env://")
    if rank != 0:
        logging.getLogger("codealign").setLevel(logging.WARNING)
    return Accel(dev, amp_dtype(dev, amp), rank, world)


def current(device: torch.device | None = None) -> Accel:
    """Accel of an already set-up process (rank / world from the process group, if any)."""
    if dist.is_available() and dist.is_initialized():
        return Accel(device or torch.device("cpu"), None, dist.get_rank(), dist.get_world_size())
    return Accel(device or torch.device("cpu"))


def teardown() -> None:
    """Leave the process group (end of a torchrun job)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank (after a data-dependent in-place
    change such as codebook revival, so the replicas stay identical)."""
    if dist.is_available() and dist.is_initialized():
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, 0)
