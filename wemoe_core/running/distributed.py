"""Scale-out on PyTorch's own ``torch.distributed`` (launched by ``torchrun``): the process group,
checked collectives, and what data parallelism needs from them.

Data parallelism, as ``adapt`` and ``evaluate`` use it (with ``data_parallel.py``): every rank
draws the SAME global batch of each task from the same seeded stream and keeps its equal share
(``Group.shard``); the loss is written as a sum over ranks of per-rank shares whose sum is the
one-process loss, batch statistics (the batch-mean prediction of ``infomax``, the batch-mean
routing of ``balance``) go through a differentiable all-reduce, and the trainable parameters'
gradients are summed over ranks before clipping and the optimiser step. So every rank takes the one-process step on identical gradients
and keeps identical routers (or AdaMerging coefficients). Evaluation: each rank counts its share
of the test set; the counts are summed.

Expert sharding (``expert_shard.py``) is the other mode: inputs are identical on every rank and
each rank holds a slice of the experts; it needs none of the above (a model that holds sharded
experts turns data parallelism off).

Failures are loud: a collective that fails (a rank died: "connection reset") or waits longer than
the process group's time-out (a rank hangs) raises :class:`DistributedError` with a message that
says so, instead of hanging. Ranks that disagree on what they run are caught at the start by
exchanging fingerprints (``Group.agree``).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 300.0          # a collective that waits longer than this means a rank is gone
LAUNCH_HINT = ("launch with `torchrun --nproc_per_node N -m wemoe_core ...` (it sets MASTER_ADDR, MASTER_PORT, "
               "RANK and WORLD_SIZE), or set those four variables on every rank yourself")


class DistributedError(RuntimeError):
    """The ranks cannot go on together: a rank died or stopped answering, the rendezvous failed,
    or the ranks disagree on what they run."""


@dataclass(frozen=True)
class Group:
    """This process's view of the default process group."""

    rank: int
    world: int
    device: torch.device               # where collectives run: cuda:<local rank> for NCCL, else cpu
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- collectives, each failing with a clear message ---------------------------------------
    def sum(self, t: torch.Tensor, *, grad: bool = False, what: str = "a sum over ranks") -> torch.Tensor:
        """The sum of ``t`` over ranks (a new tensor). With ``grad`` the sum is differentiable:
        its backward sums the ranks' gradients, so a term every rank adds once must be scaled by
        ``1 / world`` (see ``share``)."""
        import torch.distributed as dist

        x = t.to(self.device)
        if grad:
            return _SumOverRanks.apply(x, self, what).to(t.device)
        out = x.detach().clone()
        with collective(self, what):
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(t.device)

    def any(self, flag: bool, what: str = "the stop flag") -> bool:
        return bool(self.sum(torch.tensor([float(flag)]), what=what).item() > 0)

    def gather(self, obj: Any, what: str) -> list:
        """Every rank's ``obj`` (picklable), in rank order."""
        import torch.distributed as dist

        out: list = [None] * self.world
        with collective(self, what):
            dist.all_gather_object(out, obj)
        return out

    def sum_grads(self, params: Sequence[nn.Parameter]) -> None:
        """Sum the parameters' gradients over ranks, in place, in one collective."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = self.sum(torch.cat([g.reshape(-1) for g in grads]), what="the gradient all-reduce")
        for g, v in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(v.view_as(g))

    # --- data parallelism ------------------------------------------------------------------------
    def mean(self, x: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """The mean of ``x`` along its batch dimension ``dim`` over every rank's share of the
        global batch (differentiable)."""
        return self.sum(x.sum(dim), grad=True, what="a batch statistic") / (x.shape[dim] * self.world)

    def share(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's share of a term that every rank computes in full (the shares sum to it)."""
        return x / self.world

    def shard(self, batch: torch.Tensor, what: str = "a batch") -> torch.Tensor:
        """This rank's equal share of a global batch (contiguous rows)."""
        n = len(batch)
        if n % self.world:
            raise ValueError(f"{what} holds {n} images, which {self.world} ranks cannot share equally: "
                             f"use a batch_size that is a multiple of {self.world}")
        k = n // self.world
        return batch[self.rank * k:(self.rank + 1) * k]

    # --- agreement ---------------------------------------------------------------------------------
    def agree(self, what: Mapping[str, Any], label: str) -> None:
        """Raise :class:`DistributedError` on every rank unless all ranks pass the same ``what``
        (JSON-able), naming the first field where a rank differs from rank 0."""
        mine = json.loads(json.dumps(what, sort_keys=True, default=str))
        every = self.gather(mine, f"the check of {label}")
        for r, theirs in enumerate(every):
            if theirs != every[0]:
                key, a, b = _first_difference(theirs, every[0])
                raise DistributedError(
                    f"the ranks disagree on {label}: rank {r} has {key}={_short(a)} where rank 0 has {key}={_short(b)}. "
                    "Start every rank with the same command, pool files and code.")


def _first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any]:
    """(dotted key, a's value, b's value) of the first place where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
    return path or "value", a, b


def _short(v: Any, n: int = 120) -> str:
    text = json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= n else text[:n] + "..."


class _SumOverRanks(torch.autograd.Function):
    """Differentiable sum over ranks: backward sums the ranks' gradients (so the gradient is that of
    the sum of every rank's loss)."""

    @staticmethod
    def forward(ctx, x, group, what):
        import torch.distributed as dist

        ctx.group, ctx.what = group, what
        out = x.contiguous().clone()
        with collective(group, what):
            dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, g):
        import torch.distributed as dist

        g = g.contiguous().clone()
        with collective(ctx.group, f"the backward pass of {ctx.what}"):
            dist.all_reduce(g)
        return g, None, None


class collective:
    """Context manager: a failed or timed-out collective becomes a :class:`DistributedError`."""

    def __init__(self, group: Group, what: str):
        self.group, self.what = group, what

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None and is_peer_failure(exc) and not isinstance(exc, DistributedError):
            raise lost_peers(exc, self.group, self.what) from exc
        return False


def is_peer_failure(e: BaseException) -> bool:
    """Whether ``e`` comes from the process group (a dead, hung or disagreeing rank)."""
    if isinstance(e, DistributedError):
        return True
    if type(e).__name__ in ("DistBackendError", "DistNetworkError", "DistStoreError"):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(s in text for s in (
        "gloo", "Gloo", "NCCL", "Connection reset", "Connection closed", "Timed out", "timed out", "Broken pipe"))


def lost_peers(e: BaseException, group: Group | None, what: str) -> DistributedError:
    if isinstance(e, DistributedError):
        return e
    rank = f"rank {group.rank}" if group else "this rank"
    timeout = f"{group.timeout_s:g} s" if group else "the time-out"
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return DistributedError(
        f"{rank}: lost the other ranks during {what} ({type(e).__name__}: {first[:300]}). A rank died or stopped "
        f"answering for longer than {timeout}; this rank stops too. The first error is in the other ranks' output.")


# --- the process group -----------------------------------------------------------------------------
_GROUP: Group | None = None


def launched() -> bool:
    """Whether this process was started as one rank of several (``torchrun``, or the variables set by hand)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def init(*, backend: str | None = None, device: str | torch.device | None = None,
         timeout_s: float | None = None) -> Group:
    """Join the process group described by the environment (what ``torchrun`` sets) and return
    this rank's :class:`Group`. ``device`` ``"cuda"`` means this rank's GPU (``LOCAL_RANK``); the
    backend is NCCL on CUDA and gloo on CPU unless ``backend`` (or ``$WEMOE_DIST_BACKEND``) says
    otherwise. ``timeout_s`` (default ``$WEMOE_DIST_TIMEOUT_S`` or 300) bounds every collective and
    the rendezvous. Idempotent."""
    global _GROUP
    import torch.distributed as dist

    if _GROUP is not None and dist.is_initialized():
        return _GROUP
    env = _rendezvous_env()
    timeout_s = float(timeout_s or os.environ.get("WEMOE_DIST_TIMEOUT_S") or DEFAULT_TIMEOUT_S)
    dev = rank_device(device)
    backend = backend or os.environ.get("WEMOE_DIST_BACKEND") or ("nccl" if dev.type == "cuda" else "gloo")
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError("backend 'nccl' needs CUDA devices; use gloo on CPU (the default there)")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if backend == "nccl" else {}))
    except Exception as e:  # noqa: BLE001 - every rendezvous failure gets the same clear message
        raise DistributedError(
            f"rank {env['RANK']} of {env['WORLD_SIZE']}: the rendezvous at {env['MASTER_ADDR']}:{env['MASTER_PORT']} "
            f"failed within {timeout_s:g} s ({type(e).__name__}: {str(e).strip()[:300]}). Start all "
            f"{env['WORLD_SIZE']} ranks with the same MASTER_ADDR and MASTER_PORT; {LAUNCH_HINT}.") from e
    coll = torch.device("cpu") if backend == "gloo" else dev
    _GROUP = Group(dist.get_rank(), dist.get_world_size(), coll, timeout_s)
    log.info("rank %d of %d joined (%s, device %s)", _GROUP.rank, _GROUP.world, backend, dev)
    return _GROUP


def _rendezvous_env() -> dict[str, str]:
    need = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")
    missing = [k for k in need if not os.environ.get(k)]
    if missing:
        raise DistributedError(f"no rendezvous: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; "
                               f"{LAUNCH_HINT}.")
    env = {k: os.environ[k] for k in need}
    env["LOCAL_RANK"] = os.environ.get("LOCAL_RANK", env["RANK"])
    for k in ("MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        if not env[k].isdigit():
            raise DistributedError(f"{k}={env[k]!r} is not a number; {LAUNCH_HINT}.")
    if int(env["RANK"]) >= int(env["WORLD_SIZE"]):
        raise DistributedError(f"RANK={env['RANK']} is not below WORLD_SIZE={env['WORLD_SIZE']}; {LAUNCH_HINT}.")
    return env


def rank_device(device: str | torch.device | None = None) -> torch.device:
    """This rank's device: ``"cuda"`` means the GPU of ``LOCAL_RANK`` (what ``torchrun`` sets)."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and dev.index is None:
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but no CUDA device is visible")
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK") or 0) % torch.cuda.device_count())
    return dev


def shutdown() -> None:
    """Leave the process group (every rank, at the end)."""
    global _GROUP
    import torch.distributed as dist

    _GROUP = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def current(distributed: bool | None = None) -> Group | None:
    """The group to run on: None for one process. ``distributed=None`` detects an initialised
    process group of more than one rank; ``True`` requires one; ``False`` forces one process."""
    import torch.distributed as dist

    active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if distributed is False or (distributed is None and not active):
        return None
    if not active:
        raise DistributedError("distributed=True needs an initialised process group of two or more ranks: call "
                               f"wemoe_core.running.distributed.init() in every rank; {LAUNCH_HINT}.")
    if _GROUP is not None:
        return _GROUP
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return Group(dist.get_rank(), dist.get_world_size(), device)


def is_main() -> bool:
    g = current(None)
    return g is None or g.is_main


# --- what the ranks must agree on ----------------------------------------------------------------
def fingerprint(obj: Any) -> str:
    """A short hash of a JSON-able description."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
