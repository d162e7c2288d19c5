"""The memory table of the README's Scaling out section is computed from the right shapes: the
counts match the built towers and WEMOE.md's router sizes."""
from __future__ import annotations

from benchmarks import scale_out as so


def test_counts_match_the_models_and_the_paper():
    from wemoe_core.model.towers import VisionConfig, build_vision

    tower = build_vision(VisionConfig.from_open_clip("ViT-B-32"))
    assert so.tower_params("ViT-B-32") == sum(p.numel() for p in tower.parameters()) == 87_849_216
    assert so.expert_params("ViT-L-14") == 201_449_472                        # "20 x 200 M" in the issue
    assert round(so.router_params("ViT-B-32", 8) / 1e6, 2) == 7.16            # WEMOE.md: l=2 B/32 7.16 M
    assert round(so.router_params("ViT-L-14", 8) / 1e6, 2) == 25.39           # and L/14 25.39 M
    assert so.expert_params("ViT-B-32", "lowrank") == 12 * (10 * 768 * 16 + 5 * 768)


def test_the_tables_cover_every_model_task_count_and_expert_kind():
    table = so.table(so.ACTIVATION_BYTES)
    assert table.count("\n") == 1 + 3 * 3 * 2
    assert "| ViT-L-14 | 20 | dense 16.1 GB |" in table
    shard = so.static_bytes("ViT-L-14", 20, shards=8)
    assert shard["experts"] == 4 * so.expert_params("ViT-L-14") * 3           # 20 on 8 ranks: at most 3 each
    assert "| ViT-L-14 | 20 | 163.0 |" in so.cost_table()
