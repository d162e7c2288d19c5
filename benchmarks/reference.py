"""The public implementation's algorithm, written by us, as the baseline to beat.

The paper's code (tanganke/weight-ensembling_MoE) loops over the samples of a batch in Python;
per sample and per upscaled MLP it builds a full merged MLP state dict
``theta_0 + sum_t w_t tau_t`` (one expert at a time) and calls the MLP with it
(``functional_call``). Autograd keeps every sample's merged weights for backward: ~19 MB per
sample and layer for ViT-B/32. ``per_sample_loop(model)`` swaps our WEMLP forward for that loop.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from wemoe_core.merging.wemoe import WEMLP


def _merged(linear, wb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """theta_0 + sum_t w_t tau_t for one linear layer, one expert at a time (as the public code),
    accumulated in place: the same reads and arithmetic as ``weight = weight + w_t * tau_t``
    without its two fresh 9 MB transients per expert. With those, glibc's heap fragments (small
    saved activations land in the freed holes) and the step at ViT-B/32 depth grows past 20 GB;
    with the mmap threshold pinned it fits but every transient page-faults (15x slower)."""
    delta, dbias = linear.experts.delta(), linear.experts.bias
    weight, bias = linear.weight.clone(), linear.bias.clone()
    for t in range(delta.shape[0]):
        weight.addcmul_(wb[t], delta[t])
        if dbias is not None:
            bias.addcmul_(wb[t], dbias[t])
    return weight, bias


def _loop_forward(self: WEMLP, x: torch.Tensor) -> torch.Tensor:
    w = self.routing(x)                                     # (B, T), one vector per image
    outs = []
    for b in range(x.shape[0]):
        wb = w if w.dim() == 1 else w[b]
        fc_w, fc_b = _merged(self.c_fc, wb)
        pj_w, pj_b = _merged(self.c_proj, wb)
        outs.append(F.linear(self.act(F.linear(x[b:b + 1], fc_w, fc_b)), pj_w, pj_b))
    return torch.cat(outs)


@contextlib.contextmanager
def per_sample_loop() -> Iterator[None]:
    """Within this context every WEMoE MLP runs the public per-sample loop."""
    original = WEMLP.forward
    WEMLP.forward = _loop_forward
    try:
        yield
    finally:
        WEMLP.forward = original
