"""The one test-time adaptation loop, shared by AdaMerging and WEMoE.

Each step takes one unlabeled batch per task, sends each task's images through that task's own
frozen head, and minimises the Shannon entropy of the predictions (the paper's objective). The
router never sees the task id. Adam with a cosine schedule; a callback after every step; a stop
check between steps; deterministic for a fixed seed on CPU.

Two objectives and three levers beyond the paper are offered as named options, because the plain
objective can lower accuracy while it lowers entropy (``TINY8.md``): ``objective="infomax"``,
``normalize``, ``balance`` and ``logit_scale``. The preset ``PRESETS["paper"]`` is the method as
published; ``PRESETS["tiny8"]`` is what works on the offline Tiny-8 zoo.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import numpy as np
import torch

from ..model.params import validate
from ..model.towers import MultiTaskModel
from . import data_parallel, distributed as dist
from .expert_shard import sharded
from .params import ADAPTATION, PRESETS, AdaptParams  # noqa: F401 - declared there, re-exported here

log = logging.getLogger(__name__)


@dataclass
class StepInfo:
    """What a UI needs to draw one step of progress."""

    step: int                               # steps done, 1-based
    steps: int
    loss: float
    entropy: dict[str, float]               # mean prediction entropy per task (nats)
    lr: float
    elapsed: float                          # seconds since the start
    routing: np.ndarray | None = None       # (tasks, layers, experts): each task's mean routing
    coefficients: np.ndarray | None = None  # AdaMerging: (T,) or (groups, T)


@dataclass
class AdaptResult:
    history: list[StepInfo] = field(default_factory=list)
    stopped: bool = False

    @property
    def steps_done(self) -> int:
        return self.history[-1].step if self.history else 0


class AdaptationError(RuntimeError):
    """A step failed (a non-finite loss or gradient, out of memory, an exception inside the
    step); the parameters keep their last good values. ``result`` holds the steps that
    succeeded, ``step`` the 1-based number of the step that failed."""

    def __init__(self, message: str, *, result: "AdaptResult | None" = None, step: int = 0):
        super().__init__(message)
        self.result = result if result is not None else AdaptResult()
        self.step = step


def is_out_of_memory(e: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures (``torch.OutOfMemoryError``, ``MemoryError``,
    or a RuntimeError that says it could not allocate)."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _step_failed(e: Exception, step: int, result: "AdaptResult") -> AdaptationError:
    if isinstance(e, AdaptationError):
        e.result, e.step = result, step
        return e
    if is_out_of_memory(e):
        why = ("ran out of memory; the parameters keep their last good values. Use a smaller batch_size, "
               "fewer tasks, or compress='lowrank'.")
    else:
        why = (f"failed ({type(e).__name__}: {e}); the parameters keep their last good values.")
    return AdaptationError(f"step {step}: {why}", result=result, step=step)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of softmax(logits) per row (nats)."""
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)


def adapt(model: MultiTaskModel, data: Mapping[str, Iterator[torch.Tensor]], params: AdaptParams = AdaptParams(), *,
          callback: Callable[[StepInfo], None] | None = None,
          should_stop: Callable[[], bool] | None = None, distributed: bool | None = None) -> AdaptResult:
    """Adapt ``model``'s trainable parameters on endless unlabeled batches ``data[task]``.

    ``params`` is validated (a dict works too): a negative step count, a NaN learning rate or
    any value outside its declared range raises a ValueError that names it. A step that
    fails raises :class:`AdaptationError`, with the steps done so far in ``.result``.

    Data parallel (``distributed=True``, or ``None`` with an initialised process group of two or
    more ranks): every rank passes the same streams of GLOBAL batches and takes its share of each;
    the step equals the one-process step on the global batch (``running/distributed.py``)."""
    params = validate(AdaptParams, dataclasses.asdict(params) if isinstance(params, AdaptParams) else params,
                      owner=ADAPTATION)
    tasks = [t for t in model.tasks if t in data]
    if not tasks:
        raise ValueError(f"no adaptation data for any task of the model ({model.tasks})")
    trainable = model.trainable_parameters()
    if not trainable:
        raise ValueError("this model has nothing to adapt: use an AdaMerging or WEMoE model")
    enc = model.encoder
    routed = hasattr(enc, "routing_weights")
    if params.balance > 0 and not (routed and enc.params.routing == "softmax"):
        raise ValueError("balance > 0 needs a WEMoE model with routing='softmax'; set balance=0")
    joint = not (routed and enc.params.scope == "batch")
    group = dist.current(distributed)
    if group is not None:      # the ranks must run the same thing; data parallel unless experts are sharded
        dp = None if sharded(model) else group
        data_parallel.check_adaptation(group, dp, model, tasks, params, joint)
    else:
        dp = None
    opt = torch.optim.Adam(trainable, lr=params.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(params))
    result, ref, t0 = AdaptResult(), None, time.perf_counter()
    for step in range(params.steps):
        stop = should_stop is not None and should_stop()
        if group is not None:
            stop = group.any(stop, f"adaptation step {step + 1}")   # one rank's stop stops them all
        if stop:
            result.stopped = True
            break
        try:
            batches = [next(data[t]) for t in tasks]
            if group is not None:
                batches = data_parallel.rank_batches(group, dp, tasks, batches, step)
            loss, ent, routing, ref = _loss(model, tasks, batches, params, joint, ref, dp)
            value = _update(opt, loss, trainable, params, step, dp)
        except StopIteration:
            raise ValueError(f"step {step + 1}: the adaptation data ran out; pass endless iterators "
                             "(wemoe_core.model.data.unlabeled_stream)") from None
        except (Exception, MemoryError) as e:  # noqa: BLE001 - every failure keeps the last good state
            opt.zero_grad(set_to_none=True)
            if group is not None and dist.is_peer_failure(e):
                raise dist.lost_peers(e, group, f"adaptation step {step + 1}") from e
            raise _step_failed(e, step + 1, result) from e
        sched.step()
        info = StepInfo(step + 1, params.steps, float(value), ent, opt.param_groups[0]["lr"],
                        time.perf_counter() - t0, routing, _coefficients(enc))
        result.history.append(info)
        if callback is not None:
            callback(info)
    return result


def _schedule(params: AdaptParams):
    if params.schedule == "constant":
        return lambda s: 1.0
    return lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, params.steps) / params.steps))


def _loss(model, tasks, batches, params, joint, ref, dp=None):
    """(this rank's loss, entropy per task, routing summary, step-0 reference). In one process the
    loss is the objective; data parallel (``dp``), it is this rank's share: the shares of all
    ranks sum to the one-process loss, and batch statistics are taken over the global batch."""
    sizes = [len(b) for b in batches]
    if joint:   # one forward for all tasks; per-sample routing makes this exactly per-image
        feats = model.features(torch.cat(batches)).split(sizes)
        routing = [model.encoder.routing_weights(detach=False)] if hasattr(model.encoder, "routing_weights") else []
    else:       # per-batch routing: each task's batch is routed as one (FusionBench)
        feats, routing = [], []
        for t, b in zip(tasks, batches):
            feats.append(model.features(b, t))
            if hasattr(model.encoder, "routing_weights"):
                routing.append(model.encoder.routing_weights(detach=False))
    scale = params.logit_scale or None
    objs, ent = [], {}
    for t, f in zip(tasks, feats):
        z = model.heads(f, t, scale)
        h = entropy(z)
        ent[t] = float(_total(_share(h.detach().mean(), dp), dp))
        obj = _share(h.mean(), dp)                                      # sample-separable: each rank its images
        if params.objective == "infomax":   # minus H(batch-mean prediction): rewards diversity
            pm = _batch_mean(z.softmax(-1), dp)                          # over the global batch
            obj = obj + _share((pm * pm.clamp(min=1e-12).log()).sum(), dp)
        objs.append(obj)
    if ref is None:   # the global objective at step 0, identical on every rank
        ref = [_total(o, dp).abs().clamp(min=1e-6) for o in objs]
    loss = torch.stack([o / r for o, r in zip(objs, ref)]).mean() if params.normalize else torch.stack(objs).sum()
    w = torch.cat(routing, dim=1) if routing else None                  # (layers, B_total, T)
    if params.balance > 0:
        loss = loss + _share(params.balance * _balance(_batch_mean(w, dp, dim=1)), dp)
    summary = _routing_summary(w.detach(), sizes, dp) if w is not None else None
    return loss, ent, summary, ref


# In one process (dp None) these are the plain batch statistics; data parallel, see Group.
def _batch_mean(x: torch.Tensor, dp, dim: int = 0) -> torch.Tensor:
    return x.mean(dim) if dp is None else dp.mean(x, dim)


def _share(x: torch.Tensor, dp) -> torch.Tensor:
    return x if dp is None else dp.share(x)


def _total(x: torch.Tensor, dp) -> torch.Tensor:
    return x.detach() if dp is None else dp.sum(x.detach(), what="the loss report")


def _balance(p: torch.Tensor) -> torch.Tensor:
    """Mean over layers of KL(p || uniform), p: the batch-mean routing (layers, T)."""
    p = p.clamp(min=1e-8)
    return (p * (p.log() + math.log(p.shape[-1]))).sum(-1).mean()


def _routing_summary(w: torch.Tensor, sizes: list[int], dp=None) -> np.ndarray:
    """(layers, B, T) -> (tasks, layers, T): each task's mean routing weights."""
    s = torch.stack([c.mean(1) for c in w.split(sizes, dim=1)])
    return _total(_share(s, dp), dp).float().cpu().numpy()


def _update(opt, loss, trainable, params, step, dp=None) -> torch.Tensor:
    """One optimiser step; returns the loss (summed over ranks when data parallel). Data
    parallel, the gradients are summed over ranks before they are checked and clipped, so every
    rank takes the same step."""
    value = _total(loss, dp)
    if not torch.isfinite(value):
        raise AdaptationError(f"step {step + 1}: the loss is {float(value)}; the parameters keep their "
                              "last good values. Lower the learning rate or the logit scale.")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if dp is not None:
        dp.sum_grads(trainable)
    grads = [p.grad for p in trainable if p.grad is not None]
    if not all(torch.isfinite(g).all() for g in grads):
        opt.zero_grad(set_to_none=True)
        raise AdaptationError(f"step {step + 1}: non-finite gradients; the parameters keep their last "
                              "good values. Lower the learning rate or enable grad_clip.")
    if params.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(trainable, params.grad_clip)
    opt.step()
    return value


def _coefficients(enc) -> np.ndarray | None:
    if hasattr(enc, "coefficients"):
        return enc.coefficients().detach().float().cpu().numpy()
    return None
