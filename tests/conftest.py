"""Shared fixtures: tiny random open_clip vision towers on CPU (seconds, no downloads)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

from wemoe_core.model.towers import Heads, VisionConfig, build_vision  # noqa: E402

TINY = VisionConfig(image_size=16, patch_size=4, width=32, layers=3, heads=4, mlp_ratio=2.0, output_dim=16)


def make_pool(num_tasks: int = 3, seed: int = 0, cfg: VisionConfig = TINY, noise: float = 0.05):
    """A pre-trained tower and ``num_tasks`` 'fine-tuned' ones (pre-trained + random task vectors)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    pre = build_vision(cfg).eval()
    fts = []
    for _ in range(num_tasks):
        ft = build_vision(cfg).eval()
        sd = {k: v + noise * torch.randn(v.shape, generator=g) * (v.std() if v.numel() > 1 else 1.0)
              for k, v in pre.state_dict().items()}
        ft.load_state_dict(sd)
        fts.append(ft)
    heads = Heads({f"task{t}": torch.randn(5, cfg.output_dim, generator=g) for t in range(num_tasks)})
    return pre, fts, heads


@pytest.fixture
def pool():
    return make_pool()


@pytest.fixture
def images():
    return torch.randn(6, 3, TINY.image_size, TINY.image_size, generator=torch.Generator().manual_seed(1))
