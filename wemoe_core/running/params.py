"""The adaptation's settings, declared once (typed, with units, ranges and when each applies),
and its presets: ``PRESETS["paper"]`` is the method as published, ``PRESETS["tiny8"]`` what
works on the offline Tiny-8 zoo. Plain dataclasses, torch-free (see ``adapt`` for the loop)."""
from __future__ import annotations

from dataclasses import dataclass

from ..model.params import hp


@dataclass(frozen=True)
class AdaptParams:
    steps: int = hp(1000, "Adaptation steps; each uses one unlabeled batch per task", unit="steps", min=1, max=100_000, step=10)
    lr: float = hp(1e-4, "Adam learning rate", min=0.0, min_open=True, max=1.0)
    batch_size: int = hp(16, "Unlabeled images per task per step (paper: 16)", unit="images", min=1, max=1024, step=1)
    seed: int = hp(0, "Seed of the data order", min=0, max=2**31 - 1, step=1)
    schedule: str = hp("cosine", "Learning-rate schedule", choices=("cosine", "constant"))
    objective: str = hp("entropy", "entropy: Shannon entropy of each prediction (paper); infomax: entropy minus the entropy of the batch-mean prediction (keeps predictions diverse)", choices=("entropy", "infomax"))
    normalize: bool = hp(False, "Divide each task's loss by its step-0 value and average over tasks, so no task dominates")
    balance: float = hp(0.0, "Weight of router load balancing, KL(batch-mean routing || uniform); softmax routing only", min=0.0, max=100.0, step=0.1, when=("routing", "softmax"))
    logit_scale: float = hp(0.0, "Logit scale inside the loss; 0 = each head's own (100 for CLIP)", min=0.0, max=1000.0, step=1.0)
    grad_clip: float = hp(0.0, "Clip the gradient norm to this value; 0 = off", min=0.0, max=1000.0, step=0.1)


ADAPTATION = "the adaptation"      # what messages call these settings

PRESETS = {
    "paper": AdaptParams(),
    "tiny8": AdaptParams(steps=400, lr=3e-2, objective="infomax", normalize=True, balance=1.0,
                         logit_scale=10.0, grad_clip=1.0),
}
