"""torch.distributed: a window's tokens and joules summed over ranks, windows aligned.

When a process group is initialised, every rank measures its own devices; a barrier
before each window's first read and before its last aligns the windows, and the window's
tokens and joules are summed over ranks (its wall time is the longest rank's). Every rank
then holds the same sample, so every rank makes the same decisions about rounds; rank 0
records and reports, the others stay quiet. Never imports torch itself.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def local_rank_device(visible: int) -> int | None:
    """Under torchrun with several GPUs visible, the one GPU this rank uses (LOCAL_RANK).

    Every rank of a torch.distributed job sums its joules with the others'; a rank that
    measured every visible GPU would count each board once per rank. torchrun's convention
    is that rank ``LOCAL_RANK`` of a node uses ``cuda:LOCAL_RANK``. ``--tpw-devices``
    overrides this. Every device sensor (NVML, amdsmi, HLML, Sysman) follows it.
    """
    local, world = os.environ.get("LOCAL_RANK"), os.environ.get("WORLD_SIZE")
    if local is None or not local.isdigit() or world is None or not world.isdigit():
        return None
    if int(world) < 2 or visible < 2 or int(local) >= visible:
        return None
    return int(local)


class Ranks:
    """The initialised default process group, as the meter uses it."""

    def __init__(self, dist: Any, torch: Any) -> None:
        self._dist = dist
        self._torch = torch
        self.rank = int(dist.get_rank())
        self.world_size = int(dist.get_world_size())

    def barrier(self) -> None:
        self._dist.barrier()

    def _device(self) -> Any:
        if str(self._dist.get_backend()) == "nccl":  # nccl reduces GPU tensors only
            return self._torch.device("cuda", self._torch.cuda.current_device())
        return self._torch.device("cpu")

    def reduce(
        self, tokens: int, joules: float, seconds: float, invalid: bool
    ) -> tuple[int, float, float, bool]:
        """Sum tokens and joules over ranks; longest wall time; invalid if any rank's is."""
        torch, dist = self._torch, self._dist
        summed = torch.tensor(
            [float(tokens), joules, 1.0 if invalid else 0.0],
            dtype=torch.float64,
            device=self._device(),
        )
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        longest = torch.tensor([seconds], dtype=torch.float64, device=self._device())
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        total_tokens, total_joules, invalid_ranks = (float(v) for v in summed.tolist())
        return round(total_tokens), total_joules, float(longest.item()), invalid_ranks > 0


def current() -> Ranks | None:
    """The process group when one is initialised with more than one rank, else None."""
    torch = sys.modules.get("torch")
    dist = sys.modules.get("torch.distributed")
    if torch is None or dist is None:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    ranks = Ranks(dist, torch)
    return ranks if ranks.world_size > 1 else None


def counted_joules(
    joules: float, host_wide: bool, env: dict[str, str] | os._Environ[str] = os.environ
) -> float:
    """This rank's share of a window's joules in the sum over ranks.

    Counters that every process on a host reads alike (RAPL) would be counted once per rank
    of that host: only local rank 0 contributes them. Per-device counters (NVML, each rank
    its own GPU) and per-process estimates are each rank's own.
    """
    local = env.get("LOCAL_RANK")
    if host_wide and local is not None and local.isdigit() and int(local) != 0:
        return 0.0
    return joules


def env_rank() -> int | None:
    """The rank torchrun (or a launcher) gave this process, when there is one."""
    value = os.environ.get("RANK")
    return int(value) if value is not None and value.isdigit() else None
