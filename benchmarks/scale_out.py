"""Memory of scaling out, computed from the shapes and measured on CPU processes.

    python -m benchmarks.scale_out table                  # memory per device from the shapes (Markdown)
    python -m benchmarks.scale_out measure --world 2      # peak RSS: one process vs 2 ranks (sharded, data parallel)
    python -m benchmarks.scale_out measure --device cuda --world 2 --backend gloo   # the GPU check (benchmarks/gpu.sh)

``measure`` builds a WEMoE of ViT-B/32 width (768) with ``--blocks`` blocks and ``--tasks`` random
experts (each fine-tuned tower made on the fly, one at a time, as a checkpoint loader would), then
takes one adaptation step of ``--per-task`` images per task, in one process and as ``--world``
ranks (gloo on loopback) with experts sharded and data parallel. Every process is fresh and runs
with glibc's mmap threshold pinned, so its resident set follows its live tensors; it reports its
peak resident set (``VmHWM``) over the build and over the step, and the bytes of experts it holds.
On a GPU it reports peak allocated CUDA memory instead. One JSON line per process; the summary last.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import torch

GB = 1e9
ARCHS = {"ViT-B-32": (768, 12, 50), "ViT-B-16": (768, 12, 197), "ViT-L-14": (1024, 24, 257)}   # width, blocks, tokens
PATCH = {"ViT-B-32": 32, "ViT-B-16": 16, "ViT-L-14": 14}
OUTPUT = {"ViT-B-32": 512, "ViT-B-16": 512, "ViT-L-14": 768}


# --- computed from the shapes (fp32, the paper's WEMoE: every block's MLP upscaled, router depth 2) -----
def tower_params(arch: str) -> int:
    d, L, n = ARCHS[arch]
    p = PATCH[arch]
    return L * (12 * d * d + 13 * d) + d * 3 * p * p + n * d + d + 4 * d + d * OUTPUT[arch]


def expert_params(arch: str, compress: str = "none", rank: int = 16) -> int:
    """One task's experts: c_fc and c_proj of every block (weights and biases)."""
    d, L, _ = ARCHS[arch]
    per_block = 8 * d * d + 5 * d if compress == "none" else 10 * d * rank + 5 * d
    return L * per_block


def router_params(arch: str, tasks: int) -> int:
    d, L, _ = ARCHS[arch]
    return L * (d * d + d + d * tasks + tasks)


def static_bytes(arch: str, tasks: int, compress: str = "none", shards: int = 1) -> dict:
    """Bytes per device that do not depend on the batch: the tower (shared weights and the
    pre-trained MLPs), this device's experts, and the routers with their gradients and Adam's two
    moments (4 copies)."""
    experts = expert_params(arch, compress) * -(-tasks // shards)        # the largest share
    return {"tower": 4 * tower_params(arch), "experts": 4 * experts, "routers": 16 * router_params(arch, tasks)}


def table(activation_per_token_layer: float) -> str:
    """Markdown: memory per device at the paper's batch (16 images per task per step)."""
    rows = ["| model | tasks | experts | one device | 8 GPUs, data parallel | 8 GPUs, experts sharded |",
            "|---|---|---|---|---|---|"]
    for arch in ARCHS:
        d, L, n = ARCHS[arch]
        for tasks in (8, 14, 20):
            for compress in ("none", "lowrank"):
                acts = activation_per_token_layer * (d / 768) * n * L * 16 * tasks      # the whole global batch
                one = sum(static_bytes(arch, tasks, compress).values())
                shard = sum(static_bytes(arch, tasks, compress, shards=8).values())
                label = "dense" if compress == "none" else "rank 16"
                size = 4 * expert_params(arch, compress) * tasks / GB
                size = f"{size:.1f}" if size >= 1 else f"{size:.2f}"
                rows.append(f"| {arch} | {tasks} | {label} {size} GB | {(one + acts) / GB:.1f} GB | "
                            f"{(one + acts / 8) / GB:.1f} GB | {(shard + acts) / GB:.1f} GB |")
    return "\n".join(rows)


def step_flops(arch: str, tasks: int, per_task: int = 16) -> float:
    """FLOPs of one adaptation step: per image 3 plain forwards (forward, input gradients, the
    per-sample weight gradients the routers need) and 3 builds of its MLP weights (forward,
    rebuilt in backward, and the T inner products of the router gradient), 2 FLOPs per multiply-add."""
    d, L, n = ARCHS[arch]
    forward = L * (24 * n * d * d + 4 * n * n * d)
    build = L * 16 * d * d * tasks
    return per_task * tasks * 3 * (forward + build)


def step_traffic(arch: str, tasks: int, per_task: int = 16) -> dict:
    """Bytes all-reduced per step: data parallel, the router gradients; experts sharded, the
    outputs of every routed linear layer forward and its input gradients backward (fp32)."""
    d, L, n = ARCHS[arch]
    return {"data parallel": 4 * router_params(arch, tasks), "sharded": 2 * 4 * 5 * d * n * per_task * tasks * L}


def cost_table(tflops: float = 20.0) -> str:
    rows = [f"| model | tasks | TFLOP per step | GPU-hours per 1,000 steps at {tflops:g} TFLOP/s | all-reduced per step: data parallel | experts sharded |",
            "|---|---|---|---|---|---|"]
    for arch in ARCHS:
        for tasks in (8, 14, 20):
            f, t = step_flops(arch, tasks), step_traffic(arch, tasks)
            rows.append(f"| {arch} | {tasks} | {f / 1e12:.1f} | {1000 * f / (tflops * 1e12) / 3600:.2f} | "
                        f"{t['data parallel'] / 1e6:.0f} MB | {t['sharded'] / 1e9:.1f} GB |")
    return "\n".join(rows)


# --- measured ---------------------------------------------------------------------------------------
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(field)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return _status("VmHWM")


def one_rank(args) -> dict:
    """Build, then one adaptation step; in a process of its own (a rank when WORLD_SIZE > 1)."""
    import wemoe_core as wc
    from wemoe_core.merging.wemoe import WEMoEParams
    from wemoe_core.model.params import validate
    from wemoe_core.model.towers import Heads, MultiTaskModel, VisionConfig, build_vision
    from wemoe_core.running import distributed
    from wemoe_core.running.expert_shard import expert_bytes, upscale_sharded

    torch.set_num_threads(args.threads)
    baseline = _status("VmRSS")                  # Python, torch, open_clip: before any model
    group = distributed.init(device=args.device, backend=args.backend, timeout_s=600) if distributed.launched() else None
    device = distributed.rank_device(args.device)
    torch.manual_seed(0)
    cfg = VisionConfig(image_size=224, patch_size=32, width=768, layers=args.blocks, heads=12, output_dim=512)
    pre = build_vision(cfg).eval()
    names = [f"task{t}" for t in range(args.tasks)]

    def tuned(t):
        def load():
            g = torch.Generator().manual_seed(1 + t)
            return {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in pre.state_dict().items()}
        return load
    params = validate(WEMoEParams, {"compress": args.compress})
    _reset_peak(torch.device("cpu"))
    t0 = time.perf_counter()
    if args.mode == "sharded":
        enc = upscale_sharded(pre, [tuned(t) for t in range(args.tasks)], group, params=params, task_names=names)
    else:
        enc = wc.upscale(pre, [tuned(t) for t in range(args.tasks)], params=params, task_names=names)
    heads = Heads({n: torch.randn(10, 512, generator=torch.Generator().manual_seed(99)) for n in names})
    model = MultiTaskModel(enc, heads).to(device)
    build = {"baseline_bytes": baseline, "build_s": round(time.perf_counter() - t0, 1),
             "peak_build_bytes": _status("VmHWM"), "resident_after_build": _status("VmRSS")}
    batch = args.per_task                        # the global batch of each task (each rank takes its share)
    g = torch.Generator().manual_seed(5)
    data = {n: iter(lambda: torch.randn(batch, 3, 224, 224, generator=g).to(device), None) for n in names}
    _reset_peak(device)
    t0 = time.perf_counter()
    wc.adapt(model, data, wc.AdaptParams(steps=1, lr=1e-3, batch_size=batch), distributed=None if group else False)
    grads = torch.cat([p.grad.detach().double().flatten().cpu() for p in model.trainable_parameters()])
    routers = torch.cat([p.detach().double().flatten().cpu() for p in model.trainable_parameters()])
    out = {"mode": args.mode, "rank": group.rank if group else 0, "world": group.world if group else 1,
           "device": str(device), **build, "step_s": round(time.perf_counter() - t0, 1),
           "peak_step_bytes": _peak(device), "expert_bytes": expert_bytes(model),
           "grads": grads[::max(1, len(grads) // 4096)].tolist(),                  # samples, to compare
           "routers_after_step": routers[::max(1, len(routers) // 4096)].tolist()}
    distributed.shutdown()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, mode: str, world: int) -> list[dict]:
    """``world`` fresh processes of ``one_rank`` (ranks of one group when world > 1)."""
    port, procs = str(_free_port()), []
    for rank in range(world):
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(args.threads))
        if world > 1:
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), LOCAL_RANK=str(rank),
                       WORLD_SIZE=str(world))
        else:
            env.pop("WORLD_SIZE", None)
        cmd = [sys.executable, "-m", "benchmarks.scale_out", "rank", "--mode", mode, "--blocks", str(args.blocks),
               "--tasks", str(args.tasks), "--per-task", str(args.per_task), "--compress", args.compress,
               "--device", args.device, "--threads", str(args.threads)] + (["--backend", args.backend] if args.backend else [])
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=args.timeout)
        if p.returncode != 0:
            raise SystemExit(f"a {mode} process failed:\n{stderr[-3000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def measure(args) -> dict:
    notes, t_start = [], time.perf_counter()
    command = "python -m benchmarks.scale_out " + " ".join(sys.argv[1:])
    if args.device.startswith("cuda") and not args.backend and torch.cuda.device_count() < args.world:
        args.backend = "gloo"          # NCCL cannot put two ranks on one GPU
        notes.append(f"{torch.cuda.device_count()} GPU(s) for {args.world} ranks: the ranks share the GPU over gloo; "
                     "NCCL is skipped (it needs one GPU per rank)")
    runs = {"one": launch(args, "one", 1)}
    if args.only_one:
        one = {k: v for k, v in runs["one"][0].items() if k not in ("grads", "routers_after_step")}
        summary = {"setting": f"ViT-B/32 width, {args.blocks} blocks, {args.tasks} tasks ({args.compress}), "
                              f"{args.per_task} images per task, one process, {args.device}",
                   "command": command, "wall_s": round(time.perf_counter() - t_start, 1),
                   "baseline_mb": round(one["baseline_bytes"] / 2**20), "peak_build_mb": round(one["peak_build_bytes"] / 2**20),
                   "peak_step_mb": round(one["peak_step_bytes"] / 2**20), "expert_mb": round(one["expert_bytes"] / 2**20)}
        print(json.dumps(one), flush=True)
        print(json.dumps(summary), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"summary": summary, "runs": {"one": [one]}}, f, indent=1)
        return summary
    runs["sharded"] = launch(args, "sharded", args.world)
    runs["data parallel"] = launch(args, "data", args.world)
    ref = {k: torch.tensor(runs["one"][0].pop(k)) for k in ("grads", "routers_after_step")}
    differ = {}
    for mode in ("sharded", "data parallel"):
        for r in runs[mode]:
            got = {k: torch.tensor(r.pop(k)) for k in ref}
            differ.setdefault(mode, []).append({
                "grad_max_rel": float((got["grads"] - ref["grads"]).abs().max() / ref["grads"].abs().max()),
                "router_max_abs": float((got["routers_after_step"] - ref["routers_after_step"]).abs().max())})
    for rows in runs.values():
        for r in rows:
            print(json.dumps(r), flush=True)
    mb = lambda b: round(b / 2**20)  # noqa: E731
    summary = {"setting": f"ViT-B/32 width, {args.blocks} blocks, {args.tasks} tasks ({args.compress}), "
                          f"{args.per_task} images per task, {args.world} ranks, {args.device}",
               "baseline_mb": {k: [mb(r["baseline_bytes"]) for r in v] for k, v in runs.items()},
               "peak_build_mb": {k: [mb(r["peak_build_bytes"]) for r in v] for k, v in runs.items()},
               "peak_step_mb": {k: [mb(r["peak_step_bytes"]) for r in v] for k, v in runs.items()},
               "expert_mb": {k: [mb(r["expert_bytes"]) for r in v] for k, v in runs.items()},
               "step_s": {k: [r["step_s"] for r in v] for k, v in runs.items()},
               "vs_one_process": differ,   # gradient of the step (relative), routers after Adam's first step
               "backend": args.backend or ("nccl" if args.device.startswith("cuda") else "gloo"), "notes": notes,
               "command": command, "wall_s": round(time.perf_counter() - t_start, 1)}    # all 1 + 2 x world processes
    print(json.dumps(summary), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": runs}, f, indent=1)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_out", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("table", "measure", "rank"))
    p.add_argument("--mode", default="one", choices=("one", "sharded", "data"))
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--per-task", type=int, default=2)
    p.add_argument("--compress", default="none", choices=("none", "lowrank"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default=None, help="gloo or nccl (default: nccl on CUDA, gloo on CPU)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1200)
    p.add_argument("--json", help="measure: also write the results here")
    p.add_argument("--only-one", action="store_true", help="measure: the one-process run only")
    p.add_argument("--activation-bytes", type=float, default=None,
                   help="activation bytes per token per block at width 768 (default: measured, see README)")
    args = p.parse_args(argv)
    if args.what == "rank":
        print(json.dumps(one_rank(args)), flush=True)
    elif args.what == "measure":
        measure(args)
    else:
        print(table(args.activation_bytes or ACTIVATION_BYTES))
        print()
        print(cost_table())
    return 0


# Activation bytes per token per block per image that one adaptation step keeps, at width 768
# (scaled by width for L/14): measured here, one process, 4 blocks x 8 tasks, 2 vs 4 images per task
# (peak over the step 1,863,335,936 vs 2,027,888,640 bytes: 164.6 MB for 3,200 more token-blocks,
# 51.4 kB each; benchmarks/results/cpu_scale_out.json and cpu_scale_out_one_b4_p4.json). See the
# README, Scaling out.
ACTIVATION_BYTES = 51_400.0


if __name__ == "__main__":
    sys.exit(main())
