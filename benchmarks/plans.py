"""How big each measurement is, per mode. Every reduction from the paper's setting is written
here and copied into the report, so no table hides one."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Plan:
    mode: str
    arch: str = "ViT-B-32"
    layers: int | None = None                  # None: the architecture's own depth (12 for B/32)
    experts: int = 8
    rounds: int = 2                            # timed rounds per comparison (after one warm-up)
    growth_rounds: int = 2                     # the same, per point of the cost-growth curves
    infer_batches: tuple[int, ...] = (16, 64)
    loop_infer_batches: tuple[int, ...] = (16,)        # the per-sample loop is linear in the batch
    tta_per_task: int = 1                      # images per task per step for the 3-way timing (2: batch 16)
    loop_memory_per_task: tuple[int, ...] = (1, 2)     # the loop's peak, fitted linearly in the batch
    paper_per_task: int | None = 16            # our own step measured at the paper's batch (memory)
    growth_experts: tuple[int, ...] = (2, 4, 8, 16, 20)
    growth_layers: tuple[int, ...] = (4, 12, 24)
    growth_tasks: int = 2                      # tasks (1 image each) per growth step, fixed across T
    kernel_tokens: tuple[int, ...] = (1, 2, 4, 8, 16, 50)
    kernel_batch: int = 16
    build_layers: int | None = None            # upscale-from-disk model depth
    tiny8_quick: bool = False                  # Tiny-8 evaluation with --quick (fewer steps)
    tiny8_steps: int | None = None             # compression runs: adaptation steps (None: recipe)
    tiny8_seeds: tuple[int, ...] = (0,)        # compression runs: one adaptation per seed, accuracies averaged
    compress: tuple[dict, ...] = field(default_factory=lambda: (
        {"compress": "lowrank", "rank": 16}, {"compress": "lowrank", "rank": 8},
        {"compress": "sparse", "density": 0.1}, {"compress": "sparse", "density": 0.05}))
    time_lowrank: bool = True                  # inference also times every low-rank variant of ``compress``
    dtypes: tuple[str, ...] = ("float32",)
    device: str = "cpu"
    skip: tuple[str, ...] = ()                 # sections this mode leaves out unless asked for

    def lowrank_variants(self) -> list[dict]:
        return [c for c in self.compress if c.get("compress") == "lowrank"] if self.time_lowrank else []

    def reductions(self) -> list[str]:
        """Plain-language list of every way this plan departs from the paper's setting."""
        out = []
        if self.layers:
            out.append(f"{self.arch} width with {self.layers} blocks instead of the full depth")
        out.append(f"adaptation-step timing at {self.tta_per_task} image(s) per task "
                   f"({self.tta_per_task * self.experts} per step; paper: 16 per task, 128 per step)")
        out.append(f"per-sample loop peak memory measured at {', '.join(map(str, self.loop_memory_per_task))} "
                   "image(s) per task and extrapolated linearly to the paper's batch")
        out.append(f"per-sample loop inference timed at batch {', '.join(map(str, self.loop_infer_batches))} only "
                   "(its cost is exactly linear in the batch)")
        out.append(f"growth steps use {self.growth_tasks} tasks x 1 image, whatever the expert count")
        if self.layers and self.layers < 12:
            out.append("with so few blocks, fixed costs (the per-thread workspace of 16 samples' weights, "
                       "~150 MB at B/32 width, and the patch embedding) weigh more than at full depth")
        return out


FULL = Plan("full", tta_per_task=2, growth_rounds=1, tiny8_steps=200, kernel_tokens=(1, 4, 16, 50), tiny8_seeds=(0, 1, 2),
            compress=({"compress": "lowrank", "rank": 16}, {"compress": "lowrank", "rank": 32, "factors": "bfloat16"},
                      {"compress": "lowrank", "rank": 32, "factors": "bfloat16", "factor_math": "bfloat16"}))
QUICK = Plan("quick", layers=2, rounds=2, infer_batches=(2, 8), loop_infer_batches=(2,), tta_per_task=1,
             loop_memory_per_task=(1,), paper_per_task=None, growth_experts=(2, 8), growth_layers=(1, 2),
             growth_tasks=1, kernel_tokens=(1, 50), kernel_batch=4, build_layers=1, tiny8_quick=True,
             tiny8_steps=10, compress=({"compress": "lowrank", "rank": 16}, {"compress": "sparse", "density": 0.1}),
             skip=("kernels", "precision"))
GPU = Plan("gpu", rounds=5, infer_batches=(16, 64, 256), loop_infer_batches=(16,), tta_per_task=4,
           loop_memory_per_task=(1, 2, 4), paper_per_task=16, growth_experts=(2, 4, 8, 16, 20), growth_layers=(4, 12, 24),
           growth_tasks=8, kernel_tokens=(1, 4, 16, 50, 257), kernel_batch=64, dtypes=("float32", "bfloat16"),
           device="cuda")
PLANS = {"full": FULL, "quick": QUICK, "gpu": GPU}


def as_dict(plan: Plan) -> dict:
    return dataclasses.asdict(plan)
