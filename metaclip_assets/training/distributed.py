"""Data-parallel training: the process group torchrun sets up, and the few collectives the loop needs.

Started by torchrun (`torchrun --nproc_per_node N -m metaclip_assets.training ...`: RANK, WORLD_SIZE, LOCAL_RANK and
the rendezvous in the environment) every process joins one group, NCCL on GPUs and gloo on CPU; started as one
plain process it is a group of one and every collective below is a no-op. The group is set up by open_clip_train's
own helper (`init_distributed_device_so`, torch-only), as open_clip's trainer does, so device and backend choices
match it. Only rank 0 speaks: checkpoints, MLflow, the train log and Dagster Pipes messages.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass
class Group:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a SIGTERM seen by one rank stops all on the same step)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def mean(self, value: float) -> float:
        return self.sum(value) / self.world_size

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's global rank from the launcher's environment (0 for a plain process), before any group."""
    return int(os.environ.get("RANK", "0"))


def init(device: str = "auto") -> Group:
    """Join torchrun's group (or be a group of one). `device`: auto (CUDA if present), cuda or cpu; under torchrun
    each process takes the GPU of its LOCAL_RANK."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not launched_by_torchrun():
        return Group(device=torch.device(device))
    from open_clip_train.distributed import init_distributed_device_so

    if dist.is_initialized():  # a second Trainer in the same process (tests) reuses the group
        return Group(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size(), _device(device))
    # A peer that dies leaves the others in a collective: torchrun's agent then stops them all; NCCL's async error
    # handling (and torch's default collective timeout) is the backstop.
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    # open_clip's ClipLoss gathers with torch.distributed.nn.all_gather, which torch 2.14 calls deprecated (it works).
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")
    info = init_distributed_device_so(device=device)
    return Group(info["global_rank"], info["local_rank"], info["world_size"], torch.device(info["device"]))


def _device(device: str) -> torch.device:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device(f"cuda:{local}") if device.startswith("cuda") else torch.device(device)


def redirect_output(path: Path) -> None:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C++ and warnings too) to `path`.

    Under torchrun every rank inherits the pod's stdout and stderr, where rank 0 writes its Dagster Pipes messages
    line by line; another rank writing there at the same moment can split a message line. The other ranks log to
    their own file instead (torchrun's failure summary names the rank; its traceback is in this file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def shutdown() -> None:
    """Leave the group at the end of the process (torch warns about a group left open)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
