"""Peak RAM of building a merged model from a real-sized CLIP pool on disk, streamed one
checkpoint at a time through ``ClipPool`` (the same path as the Hub pools, minus the download).

    python benchmarks/pool_memory.py                        # ViT-B/32, 8 tasks, wemoe + task_arithmetic
    python benchmarks/pool_memory.py --arch ViT-L-14 --methods wemoe --keep /tmp/l14pool

Writes random checkpoints to a temporary folder: the pre-trained tower as an open_clip
safetensors file, each fine-tuned tower as a Hugging Face ``CLIPVisionModel`` folder
(``config.json`` + ``model.safetensors``, no projection, ~350 MB for B/32), and a pool JSON.
Then, per method, a fresh process loads the pool and builds the model; its peak resident set
(``VmHWM``) is reported next to what holding every model and task vector at once would
need. Prints one JSON line per method. Random weights measure memory exactly.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MB = 1 << 20


def _write_pool(folder: Path, arch: str, tasks: int, seed: int = 0) -> Path:
    """Random pre-trained + fine-tuned checkpoints and a pool file in ``folder``."""
    from safetensors.torch import save_file

    from wemoe_core.model import keys
    from wemoe_core.model.towers import VisionConfig, build_vision, state_of

    cfg = VisionConfig.from_open_clip(arch)
    torch.manual_seed(seed)
    pre = state_of(build_vision(cfg))
    save_file(pre, str(folder / "pretrained.safetensors"), metadata={"vision_config": json.dumps(cfg.to_dict())})
    names = [f"task{t}" for t in range(tasks)]
    save_file({t: torch.randn(10, cfg.output_dim) for t in names}, str(folder / "heads.safetensors"))
    hf_config = {"model_type": "clip_vision_model", "hidden_size": cfg.width, "num_hidden_layers": cfg.layers,
                 "num_attention_heads": cfg.heads, "intermediate_size": int(cfg.width * cfg.mlp_ratio),
                 "image_size": cfg.image_size, "patch_size": cfg.patch_size, "projection_dim": cfg.output_dim}
    for t, name in enumerate(names):           # one checkpoint in memory at a time here, too
        g = torch.Generator().manual_seed(seed + 1 + t)
        tuned = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in pre.items()}
        hf = keys.open_clip_to_hf(tuned)
        hf.pop("visual_projection.weight")
        (folder / name).mkdir(exist_ok=True)
        save_file(hf, str(folder / name / "model.safetensors"))
        (folder / name / "config.json").write_text(json.dumps(hf_config))
        del tuned, hf
    spec = {"arch": arch, "pretrained_vision": "pretrained.safetensors", "heads": "heads.safetensors",
            "tasks": [{"name": n, "finetuned": n, "classnames": [str(i) for i in range(10)], "templates": ["{c}"]}
                      for n in names]}
    (folder / "pool.json").write_text(json.dumps(spec))
    return folder / "pool.json"


def _peak_mb() -> float:
    """Peak resident set of this process image. VmHWM, not ru_maxrss: Linux carries ru_maxrss
    over from the parent across fork and exec, which would count the checkpoint writer."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024                       # kB -> MB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024    # other systems: an upper bound


def _measure(pool_file: Path, method: str) -> dict:
    """Runs in a fresh process: load the pool, build ``method``, report memory."""
    torch.set_num_threads(1)
    import wemoe_core as wc
    from wemoe_core.pools.clip import ClipPool

    base = _peak_mb()
    pool = ClipPool.from_file(pool_file)
    t0 = time.perf_counter()
    pre = pool.pretrained()
    model = wc.build(method, pre, pool.finetuned_sources(pool.tasks), pool.tasks)
    wall = time.perf_counter() - t0
    tower = sum(v.numel() * v.element_size() for v in pre.state_dict().values()) / MB
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / MB
    T = len(pool.tasks)
    return {"method": method, "arch": pool.arch, "tasks": T, "peak_rss_mb": round(_peak_mb()),
            "baseline_rss_mb": round(base), "peak_over_baseline_mb": round(_peak_mb() - base),
            "model_tensors_mb": round(held), "one_tower_mb": round(tower),
            "all_at_once_mb": round((2 * T + 1) * tower), "build_s": round(wall, 1)}


def main(argv=None) -> int:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ViT-B-32")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--methods", default="wemoe,task_arithmetic")
    p.add_argument("--keep", help="write (or reuse) the checkpoints in this folder instead of a temporary one")
    p.add_argument("--measure", help=argparse.SUPPRESS)          # internal: the child process
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(_measure(Path(args.measure), args.methods)))
        return 0
    with tempfile.TemporaryDirectory(prefix="wemoe_pool_") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        pool_file = folder / "pool.json"
        if not pool_file.exists():
            print(f"writing {args.tasks} random {args.arch} checkpoints to {folder} ...", file=sys.stderr)
            _write_pool(folder, args.arch, args.tasks)
        env = {**os.environ, "WEMOE_MODEL_DIR": str(folder)}
        for method in args.methods.split(","):
            out = subprocess.run([sys.executable, __file__, "--measure", str(pool_file), "--methods", method],
                                 env=env, capture_output=True, text=True, check=False)
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                return out.returncode
            print(out.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
