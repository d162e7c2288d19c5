"""Building the upscaled model from T checkpoints on disk: wall time and peak RAM.

The checkpoints (safetensors, open_clip names) are written first, unmeasured; then a fresh process
(``python -m benchmarks.build DIR``) loads the pre-trained tower and upscales, streaming the
fine-tuned files one at a time through ``wc.upscale``. Peak RAM is the process's high-water mark
(absolute, and above the resident set before upscaling); the allocator is pinned as in the probe.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import harness, synthetic

MB = 2**20


def write_checkpoints(root: Path, arch: str, layers: int | None, experts: int) -> None:
    cfg = synthetic.vit_config(arch, layers)
    pre = synthetic.pretrained(cfg)
    save_file({k: v.contiguous() for k, v in pre.state_dict().items()}, str(root / "pretrained.safetensors"))
    for t, src in enumerate(synthetic.finetuned_sources(pre, experts)):
        save_file({k: v.contiguous() for k, v in src().items()}, str(root / f"task{t}.safetensors"))
    (root / "config.json").write_text(json.dumps({"arch": arch, "layers": layers, "experts": experts}))


def measure(arch: str, layers: int | None, experts: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="wemoe-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_checkpoints(root, arch, layers, experts)
        written = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in root.glob("*.safetensors"))
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(harness.MMAP_THRESHOLD),
                   OMP_NUM_THREADS=str(torch.get_num_threads()))
        proc = subprocess.run([sys.executable, "-m", "benchmarks.build", str(root)], env=env,
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"upscale-from-disk run failed:\n{proc.stderr[-2000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(checkpoints=experts, checkpoint_mb_each=disk / (experts + 1) / MB, write_s=written,
               label=f"{arch}{f', {layers} blocks' if layers else ''}, {experts} checkpoints")
    return res


def _upscale_from(root: Path) -> dict:
    import wemoe_core as wc

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    spec = json.loads((root / "config.json").read_text())
    cfg = synthetic.vit_config(spec["arch"], spec["layers"])
    t0 = time.perf_counter()
    pre = synthetic.pretrained(cfg)
    pre.load_state_dict(load_file(str(root / "pretrained.safetensors")))
    before = harness.resident()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    sources = [lambda p=root / f"task{t}.safetensors": load_file(str(p)) for t in range(spec["experts"])]
    model = wc.upscale(pre, sources)
    seconds = time.perf_counter() - t0
    peak = harness._status("VmHWM")
    model_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / MB
    return {"wall_s": seconds, "peak_rss_mb": peak / MB, "peak_above_start_mb": (peak - before) / MB,
            "model_mb": model_mb, "resident_after_mb": harness.resident() / MB}


if __name__ == "__main__":
    print(json.dumps(_upscale_from(Path(sys.argv[1]))))
