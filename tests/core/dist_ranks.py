"""Run a function as several ranks of a gloo process group on loopback (a free port), each in a
fresh spawned process with one thread, bounded in time, and collect what each rank returned or
raised. The workers below are the cases of ``test_distributed.py`` (module level, so the spawned
processes can import them)."""
from __future__ import annotations

import os
import socket
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp

TASKS = ["task0", "task1", "task2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(fn, world: int, *args, timeout: float = 120.0, ranks=None, env: dict | None = None,
              grace: float | None = None) -> list[dict]:
    """Start ``fn(rank, world, *args)`` in ``world`` processes (only ``ranks`` of them when given)
    and wait at most ``timeout`` seconds (with ``grace``: at most that long after rank 0 ended).
    Each result: ``{"value"}`` or ``{"error", "trace"}``, plus ``"exitcode"`` (None: still
    running at the deadline, then killed) and ``"seconds"`` (when the wait for it ended)."""
    port, ctx = free_port(), mp.get_context("spawn")
    ranks = list(range(world)) if ranks is None else list(ranks)
    with tempfile.TemporaryDirectory() as tmp:
        procs = {r: ctx.Process(target=_entry, args=(fn, r, world, port, tmp, args, env or {})) for r in ranks}
        t0 = time.monotonic()
        for p in procs.values():
            p.start()
        ended, deadline = {}, t0 + timeout
        for r, p in procs.items():
            p.join(max(0.1, deadline - time.monotonic()))
            ended[r] = time.monotonic() - t0
            if grace is not None and r == ranks[0]:
                deadline = min(deadline, time.monotonic() + grace)
        out = []
        for r, p in procs.items():
            alive = p.is_alive()
            if alive:                 # a process this helper started: end it by its own handle
                p.kill()
                p.join(10)
            path = Path(tmp) / f"rank{r}.pt"
            res = torch.load(path, weights_only=False) if path.exists() else {}
            res.update(rank=r, exitcode=None if alive else p.exitcode, seconds=ended[r])
            out.append(res)
        return out


def _entry(fn, rank, world, port, tmp, args, env):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "HF_HUB_OFFLINE": "1", **env})
    torch.set_num_threads(1)
    from wemoe_core.running import distributed

    code = 0
    try:
        res = {"value": fn(rank, world, *args)}
    except BaseException as e:  # noqa: BLE001 - reported to the test
        res, code = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}, 1
    torch.save(res, Path(tmp) / f"rank{rank}.pt")
    if code == 0:
        distributed.shutdown()
    os._exit(code)           # without waiting for peers that may be gone


# --- the cases -----------------------------------------------------------------------------------
def streams(batch: int = 4, seed: int = 0, dtype=torch.float32):
    """Endless GLOBAL batches per task, the same on every rank."""
    g = torch.Generator().manual_seed(seed)
    data = {t: torch.randn(32, 3, 16, 16, generator=g).to(dtype) for t in TASKS}

    def endless(x):
        i = 0
        while True:
            s = (i * batch) % 32
            yield x[s:s + batch]
            i += 1
    return {t: endless(x) for t, x in data.items()}


def eval_sets(n: int = 13, batch: int = 5, dtype=torch.float32):
    """Labeled test batches per task (map-style, so each rank reads only its share)."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(7)
    return {t: DataLoader(TensorDataset(torch.randn(n, 3, 16, 16, generator=g).to(dtype),
                                        torch.randint(0, 5, (n,), generator=g)), batch_size=batch) for t in TASKS}


def build(method: str, hparams: dict, pool_seed: int = 0):
    import wemoe_core as wc
    from tests.conftest import make_pool
    from wemoe_core.model.towers import MultiTaskModel

    pre, fts, heads = make_pool(seed=pool_seed)
    return MultiTaskModel(wc.build(method, pre, fts, TASKS, **hparams), heads)


def adapt_case(method: str, hparams: dict, adapt: dict, *, distributed=None, pool_seed: int = 0, on_step=None,
               dtype: str = "float32"):
    """Build, adapt, evaluate; return what must match one process."""
    import wemoe_core as wc
    from wemoe_core.running.evaluate import routing_share

    dt = getattr(torch, dtype)
    model = build(method, hparams, pool_seed).to(dt)
    res = wc.adapt(model, streams(adapt.get("batch_size", 4), dtype=dt), wc.AdaptParams(**adapt),
                   distributed=distributed, callback=on_step)
    table = wc.evaluate(model, eval_sets(dtype=dt), distributed=distributed)
    out = {"trainable": [p.detach().clone() for p in model.trainable_parameters()],
           "losses": [h.loss for h in res.history], "entropy": [h.entropy for h in res.history],
           "accuracy": table["accuracy"].to_dict(), "n": table["n"].to_dict()}
    if method == "wemoe":
        out["share"] = routing_share(model, eval_sets(dtype=dt), distributed=distributed).fillna(-1).to_dict()
    return out


def scenarios_worker(rank, world, scenarios: dict, timeout_s=60):
    """Several scenarios in one process group (starting processes is the slow part): each
    ``name: (worker, args)`` runs in turn; its value or error is kept. Every scenario here fails,
    if it fails, on every rank at the same point, so the group stays in step."""
    from wemoe_core.running import distributed

    group = distributed.init(timeout_s=timeout_s)
    out = {}
    for name, (fn, args) in scenarios.items():
        try:
            out[name] = {"value": fn(group, *args)}
        except Exception as e:  # noqa: BLE001 - reported to the test
            out[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}
    return out


def adapt_scenario(group, method, hparams, adapt, pool_seed=0, dtype="float32"):
    return adapt_case(method, hparams, adapt, pool_seed=pool_seed, dtype=dtype)


def die_worker(rank, world, how: str, timeout_s: float):
    """Rank 1 dies (``os._exit``) or hangs (sleeps) after step 2; rank 0 must fail clearly."""
    from wemoe_core.running import distributed

    distributed.init(timeout_s=timeout_s)

    def on_step(info):
        if rank == 1 and info.step == 2:
            if how == "die":
                os._exit(3)
            time.sleep(600)
    return adapt_case("wemoe", {}, {"steps": 6, "lr": 1e-2}, on_step=on_step)


def init_worker(rank, world, timeout_s: float):
    from wemoe_core.running import distributed

    distributed.init(timeout_s=timeout_s)
    return "joined"


def mismatch_scenario(group, what: str):
    """The ranks differ in their pool (other weights) or their recipe (another learning rate)."""
    lr = 1e-3 * (1 + group.rank) if what == "recipe" else 1e-3
    return adapt_case("wemoe", {}, {"steps": 2, "lr": lr}, pool_seed=group.rank if what == "pool" else 0)


def sharded_scenario(group, hparams, adapt, dtype="float32"):
    """Expert sharding: forward features, router gradients of one loss, then N adaptation steps."""
    from tests.conftest import make_pool
    from wemoe_core.merging.wemoe import WEMoEParams
    from wemoe_core.model.params import validate
    from wemoe_core.model.towers import MultiTaskModel
    from wemoe_core.running.expert_shard import expert_bytes, full_fingerprint, upscale_sharded

    pre, fts, heads = make_pool()
    params = validate(WEMoEParams, hparams)
    model = MultiTaskModel(upscale_sharded(pre, fts, group, params=params, task_names=TASKS), heads)
    return sharded_checks(model.to(getattr(torch, dtype)), adapt) | {
        "expert_bytes": expert_bytes(model), "fingerprint": full_fingerprint(model.encoder, group)}


def sharded_checks(model, adapt: dict) -> dict:
    import wemoe_core as wc

    dt = next(model.parameters()).dtype
    x = next(streams(6, seed=3, dtype=dt)["task0"])
    feats = model.features(x)
    loss = sum(model.logits(x, t).logsumexp(-1).mean() for t in TASKS)
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.trainable_parameters()]
    model.zero_grad(set_to_none=True)
    res = wc.adapt(model, streams(adapt.get("batch_size", 4), dtype=dt), wc.AdaptParams(**adapt))
    table = wc.evaluate(model, eval_sets(dtype=dt))
    return {"features": feats.detach(), "grads": grads, "losses": [h.loss for h in res.history],
            "trainable": [p.detach().clone() for p in model.trainable_parameters()],
            "accuracy": table["accuracy"].to_dict()}
