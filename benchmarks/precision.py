"""How exact the fast paths are: bf16 against fp32 (WEMoE and, for scale, the plain tower), and
the two exact implementations against each other. Reported as the relative error of the
features, ||a - b|| / ||b||, over a few random images."""
from __future__ import annotations

import copy

import torch

from .scenarios import Bench


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@torch.no_grad()
def run(bench: Bench, images: int = 4) -> dict:
    x = bench.images(images)
    out = {}
    ref = {"plain": bench.plain(x), "wemoe": bench.moe(x)}
    impls = {}
    for impl in ("weights", "outputs"):
        for m in bench.moe.modules():
            if hasattr(m, "impl"):
                m.impl = impl
        impls[impl] = bench.moe(x)
    for m in bench.moe.modules():
        if hasattr(m, "impl"):
            m.impl = bench.setup.impl
    out["weights vs outputs (fp32), relative error"] = f"{_rel(impls['outputs'], impls['weights']):.1e}"
    if bench.setup.device != "cpu" or images <= 4:
        for name, model in (("plain", bench.plain), ("wemoe", bench.moe)):
            low = copy.deepcopy(model).to(torch.bfloat16)
            out[f"{name} bf16 vs fp32, relative error"] = f"{_rel(low(x.to(torch.bfloat16)), ref[name]):.1e}"
            del low
    return out
