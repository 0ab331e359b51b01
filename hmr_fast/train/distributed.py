"""Process group and device of a training run (``torchrun`` sets RANK / WORLD_SIZE)."""

from __future__ import annotations

import dataclasses
import os

import torch


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str = "auto") -> DistInfo:
    """Initialise torch.distributed when launched by torchrun (RANK / WORLD_SIZE set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    return info


def resolve_device(pref: str, dist_info: DistInfo) -> torch.device:
    if pref == "cpu" or (pref == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {pref!r} requested but CUDA is not available")
    if pref.startswith("cuda:"):
        return torch.device(pref)
    return torch.device("cuda", dist_info.local_rank)


def broadcast_int(value: int, dist_info: DistInfo, device: torch.device) -> int:
    """Rank 0's ``value`` on every process (so that all stop, or shorten a schedule, alike)."""
    if not dist_info.enabled:
        return int(value)
    import torch.distributed as dist

    t = torch.tensor([int(value)], device=device)  # NCCL broadcasts device tensors only
    dist.broadcast(t, 0)
    return int(t.item())


def agree(flag: bool, dist_info: DistInfo, device: torch.device) -> bool:
    """Rank 0's decision, so that every process stops at the same step."""
    return bool(broadcast_int(int(flag), dist_info, device))


def finish(dist_info: DistInfo) -> None:
    """Wait for every process, then leave the process group (no-op on one process)."""
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
