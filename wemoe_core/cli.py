"""The command line: ``python -m wemoe_core <command> --help``.

  pools        list pools and whether they can be used here
  build-tiny8  build the offline Tiny-8 zoo from scratch
  evaluate     run methods on a pool and print an accuracy table (``--json`` for machines)
  merge        merge (and, for learning methods, adapt) and write a safetensors file
  export       turn a saved WEMoE into a router-only checkpoint and/or a recipe JSON
  demo         a 10-second self-check on tiny random models
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("wemoe_core")


def _bar(label: str, done: int, total: int) -> None:
    width = 30
    fill = int(width * done / max(total, 1))
    end = "\n" if done >= total else ""
    print(f"\r{label:>18} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}", end=end, file=sys.stderr, flush=True)


def _pools(args) -> int:
    from .pools import list_pools

    for e in list_pools():
        state = "available" if e.availability.ok else f"unavailable: {e.availability.reason}"
        print(f"{e.name:24} {e.title:36} {state}")
    return 0


def _build_tiny8(args) -> int:
    from .pools.tiny8.build import QUICK, BuildConfig, build

    cfg = QUICK if args.quick else BuildConfig()
    cfg = cfg.__class__(**{**vars(cfg), "seed": args.seed})
    manifest = build(args.out, cfg, report=lambda m: print(m, file=sys.stderr, flush=True))
    acc = manifest["accuracy"]
    print(json.dumps({"pretrained": acc["pretrained"]["avg"], "individual": acc["individual"]["avg"],
                      "wall_s": manifest["build"]["wall_s"]}))
    return 0


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _evaluate(args) -> int:
    from .pools import load_pool
    from .running.suite import accuracy_frame, expand_methods, run_suite

    pool = load_pool(args.pool)
    avail = pool.availability()
    if not avail.ok:
        raise ValueError(f"pool {args.pool!r} is unavailable: {avail.reason}")
    group, device = _ranks(args, pool)
    steps = args.steps or (args.quick_steps if args.quick else None)
    result = run_suite(pool, expand_methods(args.methods), args.tasks.split(",") if args.tasks else None,
                       steps=steps, curve_every=args.curve_every, eval_limit=args.eval_limit,
                       progress=_bar if _main_rank(group) else None, device=device,
                       shard=group if args.shard_experts else None,
                       adapt={"batch_size": args.batch_size} if args.batch_size else None)
    if not _main_rank(group):          # rank 0 alone prints and writes
        return 0
    if group is not None:
        result["ranks"] = {"world": group.world, "mode": "experts sharded" if args.shard_experts else "data parallel"}
    print(accuracy_frame(result).round(1).to_string())
    if result["routing_share"]:
        print("\nrouting share (%): images of task t whose strongest expert is expert t")
        print(json.dumps(result["routing_share"], indent=1) if args.verbose else
              _share_text(result["routing_share"]))
    print(f"\nwall time: {result['wall_s']:.0f} s")
    if args.json:
        from .sources.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return 0


def _share_text(share: dict) -> str:
    import pandas as pd

    return pd.DataFrame(share).T.round(0).to_string()


def _merge(args) -> int:
    from .merging.wemoe import WEMoE
    from .pools import load_pool
    from .running.adapt import AdaptationError
    from .running.workbench import adapt_run, build_model, evaluate_run, recipe_for
    from .sources.files import save_merged, save_routers, save_wemoe

    pool = load_pool(args.pool)
    tasks = args.tasks.split(",") if args.tasks else None
    if tasks is not None and len(tasks) != len(set(tasks)) or (tasks is not None and not all(tasks)):
        raise ValueError(f"--tasks {args.tasks!r}: name each task once, separated by commas")
    adapt = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size)) if v is not None} or None
    hparams = _parse_sets(args.set)
    if adapt is not None and recipe_for(pool, args.method, hparams)[2] is None:
        raise ValueError(f"{args.method} does not adapt: drop --steps and --batch-size (or choose adamerging_task, "
                         "adamerging_layer or wemoe)")
    group, device = _ranks(args, pool)
    main_rank = _main_rank(group)
    run = build_model(pool, tasks, args.method, hparams, adapt, shard=group if args.shard_experts else None)
    run.model.to(device)
    failed = ""
    try:
        adapt_run(run, pool, callback=lambda s: _bar(args.method, s.step, s.steps) if main_rank else None, device=device)
    except AdaptationError as e:     # keep the last good state: evaluate and save it, then say so
        if group is not None:        # one rank's failure: the ranks cannot go on in step
            raise
        failed = str(e)
        print(f"\nerror: {failed}\nsaving the last good state ({e.result.steps_done} steps)", file=sys.stderr)
    table = evaluate_run(run, pool, limit=args.eval_limit, device=device)
    enc = run.model.encoder
    sharded_fp = None
    if args.shard_experts and isinstance(enc, WEMoE):   # every rank takes part
        from .running.expert_shard import full_fingerprint

        sharded_fp = full_fingerprint(enc, group)
    if not main_rank:                # rank 0 alone prints and writes
        return 0
    print(table.round(2).to_string())
    cfg = pool.info.vision_config
    if sharded_fp is not None:
        save_routers(args.out, enc, run.recipe, weights_fingerprint=sharded_fp)
        print(f"wrote {args.out} (routers only: with --shard-experts no process holds the whole model; "
              "load_routers puts them into the pool's WEMoE built in one process)")
        return 0
    if isinstance(enc, WEMoE):
        save_wemoe(args.out, enc, cfg, run.recipe)
        if args.routers:
            save_routers(args.routers, enc, run.recipe)
    elif hasattr(enc, "merged_state"):
        save_merged(args.out, {k: v.detach() for k, v in enc.merged_state().items()}, cfg, run.recipe)
    elif getattr(enc, "needs_task", False):
        raise ValueError(f"{args.method} keeps one model per task: there is no single merged model to save")
    else:
        save_merged(args.out, enc, cfg, run.recipe)
    print(f"wrote {args.out}")
    return 1 if failed else 0


def _export(args) -> int:
    from .sources.files import load_wemoe, save_routers

    model, recipe = load_wemoe(args.model)
    if args.routers:
        save_routers(args.routers, model, recipe)
        print(f"wrote {args.routers}")
    if args.recipe:
        from .sources.files import atomic_write_text

        atomic_write_text(args.recipe, json.dumps(json.loads(recipe.to_json()), indent=1) + "\n")
        print(f"wrote {args.recipe}")
    return 0


def _ranks(args, pool):
    """(process group or None, this rank's device). Under ``torchrun`` the ranks first check that
    they run the same command on the same pool and code."""
    import torch

    from . import __version__
    from .running import distributed

    group = distributed.current(None)
    device = distributed.rank_device(args.device) if group is not None else torch.device(args.device)
    if args.shard_experts and group is None:
        raise ValueError("--shard-experts needs several processes: launch with `torchrun --nproc_per_node N -m "
                         "wemoe_core ...`")
    if group is not None:
        skip = {"func", "verbose", "json", "out", "routers"}
        group.agree({"command": {k: v for k, v in vars(args).items() if k not in skip},
                     "pool": distributed.fingerprint(_pool_description(pool)),
                     "code": __version__, "torch": torch.__version__}, "the command, pool and code")
    return group, device


def _pool_description(pool) -> dict:
    info = pool.info
    return {"name": pool.name, "source": info.source, "vision": info.vision_config.to_dict(),
            "tasks": [[t.name, list(t.classnames)] for t in info.tasks], "recipes": pool.recipes}


def _main_rank(group) -> bool:
    return group is None or group.is_main


def _demo(args) -> int:
    """Merge three tiny random towers and adapt WEMoE for a few steps."""
    import torch

    import wemoe_core as wc
    from .model.towers import Heads, VisionConfig, build_vision

    torch.manual_seed(0)
    cfg = VisionConfig(image_size=16, patch_size=4, width=32, layers=2, heads=4, output_dim=16)
    pre = build_vision(cfg).eval()
    fts = [{k: v + 0.02 * torch.randn_like(v) for k, v in pre.state_dict().items()} for _ in range(3)]
    tasks = ["a", "b", "c"]
    model = wc.MultiTaskModel(wc.build("wemoe", pre, fts, tasks), Heads({t: torch.randn(4, 16) for t in tasks}))
    data = {t: iter(lambda: torch.randn(8, 3, 16, 16), None) for t in tasks}
    res = wc.adapt(model, data, wc.AdaptParams(steps=args.steps, lr=1e-3), callback=lambda s: _bar("demo", s.step, s.steps))
    print(f"adapted {res.steps_done} steps; routing weights (layers, batch, experts): "
          f"{tuple(model.encoder.routing_weights().shape)}")
    return 0


def _scale_out_options(p: argparse.ArgumentParser) -> None:
    import os

    p.add_argument("--batch-size", type=int, help="adaptation images per task per step (default: the pool's recipe; "
                   "under torchrun a multiple of the number of ranks)")
    p.add_argument("--device", default=os.environ.get("WEMOE_DEVICE") or "cpu",
                   help="cpu, cuda (under torchrun: each rank's own GPU) or cuda:N (default: $WEMOE_DEVICE or cpu)")
    p.add_argument("--shard-experts", action="store_true",
                   help="under torchrun: each rank holds 1/N of WEMoE's experts (for models that do not fit one device)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wemoe_core", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("pools", help="list pools").set_defaults(func=_pools)
    b = sub.add_parser("build-tiny8", help="build the Tiny-8 zoo from scratch")
    b.add_argument("--out", default="assets/tiny8")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--quick", action="store_true", help="a reduced build (seconds), for tests")
    b.set_defaults(func=_build_tiny8)
    e = sub.add_parser("evaluate", help="run methods on a pool and print accuracy")
    e.add_argument("--pool", default="tiny8")
    e.add_argument("--methods", default="all", help="'all' or a comma-separated list")
    e.add_argument("--tasks", help="comma-separated task names (default: all of the pool's)")
    e.add_argument("--steps", type=int, help="adaptation steps (default: the pool's recipe)")
    e.add_argument("--quick", action="store_true", help="fewer adaptation steps")
    e.add_argument("--quick-steps", type=int, default=40, help=argparse.SUPPRESS)
    e.add_argument("--curve-every", type=int, default=0, help="measure accuracy every N adaptation steps")
    e.add_argument("--json", help="write the results as JSON to this path")
    e.add_argument("--eval-limit", type=int, help="test images per task for accuracies (default: all)")
    _scale_out_options(e)
    e.set_defaults(func=_evaluate)
    m = sub.add_parser("merge", help="merge (and adapt) one method, save safetensors")
    m.add_argument("--pool", default="tiny8")
    m.add_argument("--method", required=True)
    m.add_argument("--tasks")
    m.add_argument("--set", action="append", metavar="NAME=VALUE", help="a hyperparameter (repeatable)")
    m.add_argument("--steps", type=int, help="adaptation steps for learning methods")
    m.add_argument("--out", required=True)
    m.add_argument("--routers", help="also write a router-only checkpoint (WEMoE)")
    m.add_argument("--eval-limit", type=int, help="test images per task for the accuracy table (default: all)")
    _scale_out_options(m)
    m.set_defaults(func=_merge)
    x = sub.add_parser("export", help="router-only checkpoint / recipe from a saved WEMoE")
    x.add_argument("--model", required=True)
    x.add_argument("--routers")
    x.add_argument("--recipe")
    x.set_defaults(func=_export)
    d = sub.add_parser("demo", help="a 10-second self-check on tiny random models")
    d.add_argument("--steps", type=int, default=5)
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    from .running import distributed
    from .running.adapt import AdaptationError

    try:
        if distributed.launched():       # one rank of several (torchrun): join the others first
            distributed.init(device=distributed.rank_device(getattr(args, "device", "cpu")))
        return args.func(args)
    except distributed.DistributedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (AdaptationError, OSError, MemoryError) as e:
        print(f"error: {e or type(e).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
