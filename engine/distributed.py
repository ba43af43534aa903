"""Data-parallel runs under torchrun; every helper is a no-op in a plain single-process run.

``torchrun --nproc_per_node=N train_cnn.py --exp NAME`` starts N copies of the entry point
with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their
environment. :func:`setup` reads them and joins the process group (NCCL when the device is
a GPU, gloo on the CPU); without them (or with ``WORLD_SIZE=1``) nothing is initialised and
every function below answers as a world of one, so the trainer has a single code path (the
shape of nanoGPT's ``train.py``).

Evaluation can split feature extraction across the ranks with two calls::

    part = torch.utils.data.Subset(dataset, shard_indices(len(dataset)))
    feats, labels = extract_features(model, part, ...)   # this rank's contiguous share
    feats, labels = gather_features(feats, labels)       # every rank: all N rows, in order

``shard_indices`` hands rank r a contiguous block and ``gather_features`` concatenates the
blocks in rank order, so the result equals a single-process extraction row for row.
"""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from config import ConfigError
from utils.device import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, GPU ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def env_context() -> DistContext:
    """The torchrun environment of this process (a world of one when there is none)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"torchrun environment is inconsistent: RANK={rank}, WORLD_SIZE={world}")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def context() -> DistContext:
    """This process's place in the current process group (a world of one when none)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", dist.get_rank()))
    return DistContext()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(device_name: str, timeout_s: float = 1800.0) -> tuple[DistContext, torch.device]:
    """Resolve the device and, under torchrun with more than one process, join the group.

    Returns the context and this process's device (``cuda:LOCAL_RANK`` for ``auto``/``cuda``
    on a GPU machine). Idempotent: a second call reuses the group."""
    ctx = env_context()
    if not ctx.enabled:
        return ctx, resolve_device(device_name)
    device = resolve_device(device_name, local_rank=ctx.local_rank)
    if dist.is_initialized():
        return context(), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _bind_world_defaults_before_init()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return context(), device


def _bind_world_defaults_before_init() -> None:
    # torch.distributed.nn.functional writes ``group=group.WORLD`` as default arguments, which
    # Python evaluates once, on import. DistributedDataParallel imports that module lazily, after
    # the group exists, so ten functions' defaults would hold the group for good: then
    # destroy_process_group cannot free it, and gloo's worker threads outlive it into interpreter
    # shutdown, where one that drops its last finished work (tensors with Python objects) must
    # take the GIL and aborts the process instead (SIGABRT, "terminate called without an active
    # exception"; about 1 run in 20 under load, after a successful run). Imported before
    # init_process_group, those defaults are None.
    try:
        import torch.distributed.nn.functional  # noqa: F401
    except ImportError:  # pragma: no cover - builds without it do not bind the group either
        pass


def cleanup() -> None:
    """Leave the process group (no-op when there is none), freeing it while Python still runs.

    Call it once the trainer is unreferenced (not from a ``finally`` that an exception's
    traceback keeps its frames alive through). A finished trainer sits in reference cycles
    that hold DistributedDataParallel, whose reducer holds the group; collecting them first
    lets :func:`dist.destroy_process_group` drop the last reference, and the group's
    destructor joins gloo's worker threads. A group that outlived this call would keep those
    threads into interpreter shutdown, where they can abort the process (see
    :func:`_bind_world_defaults_before_init`). All ranks meet at a barrier first, so no rank
    leaves while rank 0 still writes the last checkpoint; if a peer is already gone (an
    error path), the failed barrier is ignored and the group is destroyed anyway."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        try:
            dist.barrier()
        except Exception:  # noqa: BLE001 - a dead peer must not stop us from leaving
            pass
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    # NCCL moves only GPU tensors; gloo only CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (returns a new float64 CPU tensor; a copy when alone)."""
    out = values.detach().to(torch.float64).cpu().clone()
    if is_distributed():
        buf = out.to(_comm_device())
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        out = buf.cpu()
    return out


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """For each flag: is it true on at least one rank? All ranks get the same answer, so they
    take the same branch (stop, raise) together instead of leaving the others waiting."""
    if not is_distributed():
        return tuple(bool(f) for f in flags)
    summed = all_reduce_sum(torch.tensor([float(bool(f)) for f in flags]))
    return tuple(bool(v > 0) for v in summed.tolist())


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (batch-norm running statistics) to every rank."""
    if not is_distributed():
        return
    device = _comm_device()
    for buf in module.buffers():
        moved = buf.data.to(device)
        dist.broadcast(moved, src=src)
        if moved is not buf.data:
            buf.data.copy_(moved)


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> range:
    """The contiguous block of ``range(n)`` that ``rank`` of ``world_size`` handles.

    Blocks differ in length by at most one (the first ``n % world_size`` ranks take one
    more) and, concatenated in rank order, give ``range(n)``. Defaults: the current group."""
    ctx = context()
    rank = ctx.rank if rank is None else rank
    world_size = ctx.world_size if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size or n < 0:
        raise ValueError(f"shard_indices: need n >= 0 and 0 <= rank < world_size, got {n}, {rank}, {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``rows`` (same trailing shape and dtype, any number of rows)
    in rank order, on every rank, returned on the CPU. Alone: ``rows`` on the CPU."""
    if not is_distributed():
        return rows.cpu()
    device = _comm_device()
    world = dist.get_world_size()
    count = torch.tensor([rows.shape[0]], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c.item()) for c in counts]
    longest = max(counts)
    padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=device)
    padded[: rows.shape[0]] = rows.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).cpu()


def gather_features(
    features: torch.Tensor, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All ranks' features (n_r, D) and labels (n_r,) -> (N, D), (N,) in rank order.

    With :func:`shard_indices` shards this reproduces the single-process order row for row."""
    feats = gather_rows(features)
    return feats, (gather_rows(labels) if labels is not None else None)


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' equally sized ``x`` concatenated in rank order; the backward pass hands each
    rank the gradient of the *sum* of every rank's loss with respect to its own rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        ctx.rows, ctx.rank = x.shape[0], rank
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's (n, ...) ``x`` (the same n on each) as one (W * n, ...) tensor in rank
    order, differentiable: the identity in a single process.

    Every rank then computes the same global loss L from the gathered rows. The backward
    pass sums the W ranks' gradients of L for this rank's rows (W dL/dx_r), and DDP's
    averaging of the parameter gradients divides by W again: the update is exactly dL/dθ,
    as one process with the whole batch would compute it (e.g. SimCLR's negatives from the
    global batch). Works on gloo (CPU) and NCCL (GPU) alike."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)
