"""Every method's hyperparameters, declared once (typed, with units, ranges and when each
applies): the registry, the UI's controls, the CLI and the exports read them from here. Plain
dataclasses, torch-free, so describing the methods costs no import of torch."""
from __future__ import annotations

from dataclasses import dataclass

from ..model.params import hp


@dataclass(frozen=True)
class NoParams:
    pass


@dataclass(frozen=True)
class TaskArithmeticParams:
    scale: float = hp(0.3, "λ: multiplies the sum of the task vectors", min=0.0, max=2.0, step=0.05)


@dataclass(frozen=True)
class TiesParams:
    scale: float = hp(1.0, "λ: multiplies the merged (disjoint-mean) task vector; the paper uses 1", min=0.0, max=2.0, step=0.05)
    density: float = hp(0.2, "Fraction of each task vector's entries kept, by magnitude (paper: 0.2)", min=0.0, min_open=True, max=1.0, step=0.05)
    topk: str = hp("global", "Rank magnitudes over the whole task vector (paper) or within each tensor", choices=("global", "per_tensor"))


@dataclass(frozen=True)
class AdaMergingParams:
    init: float = hp(0.3, "Initial merging coefficient λ of every task (and layer)", min=0.0, max=2.0, step=0.05)
    clamp: bool = hp(True, "Keep coefficients in [0, 1] (official AdaMerging)")


@dataclass(frozen=True)
class WEMoEParams:
    """How to build a WEMoE model (the routers' training is configured separately)."""

    init_lambda: float = hp(0.3, "λ of the task-arithmetic merge of all shared weights, and the routers' initial output", min=0.0, max=2.0, step=0.05)
    router_depth: int = hp(2, "Router layers: 0 = a free weight per expert, 1 = linear, 2 = MLP (paper default)", choices=(0, 1, 2))
    blocks: int = hp(0, "Upscale the last k transformer blocks; 0 = every block (paper)", unit="blocks", min=0, max=64, step=1)
    upscale_attention: bool = hp(False, "Also upscale each block's attention as a second, separately routed module (paper: 89.2 vs 88.3)")
    routing: str = hp("dense", "dense: unconstrained weights (paper); softmax: weights sum to 1, starting at the simple average", choices=("dense", "softmax"))
    scope: str = hp("sample", "sample: each image gets its own weights (paper); batch: one vector per batch (FusionBench shortcut, leaks the task when a batch holds one task)", choices=("sample", "batch"))
    compress: str = hp("none", "Store task vectors dense, as rank-r factors (lowrank), or as their largest entries (sparse); compressed saves memory, approximately", choices=("none", "lowrank", "sparse"))
    rank: int = hp(16, "Rank of compressed experts (compress='lowrank')", min=1, max=1024, step=1, when=("compress", "lowrank"))
    factors: str = hp("float32", "Storage of the low-rank factors: bfloat16 halves their bytes (compress='lowrank')", choices=("float32", "bfloat16"), when=("compress", "lowrank"))
    factor_math: str = hp("float32", "Arithmetic of the low-rank products: float32, or bfloat16 inputs with float32 accumulation (several times faster on CPUs with AMX or AVX512-BF16 and on recent GPUs, slower on others; approximate). The pre-trained weights' product stays float32 (compress='lowrank')", choices=("float32", "bfloat16"), when=("compress", "lowrank"))
    density: float = hp(0.1, "Fraction of each task vector's entries kept, by magnitude (compress='sparse'); value + index cost 2 x density of the dense memory", min=0.0, min_open=True, max=1.0, step=0.01, when=("compress", "sparse"))
    seed: int = hp(0, "Seed of the routers' random initialisation", min=0, max=2**31 - 1, step=1)
