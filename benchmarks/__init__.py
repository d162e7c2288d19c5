"""The performance suite of WEMoE Explorer: ``python -m benchmarks [--quick | --gpu]``.

Measures WEMoE inference and adaptation against a plain ViT forward (the floor) and against the
public implementation's per-sample loop (the baseline), how the cost grows with experts and
blocks, building from checkpoints on disk, and the Tiny-8 figures (evaluation wall time,
prediction latency, compressed experts). Writes JSON, a Markdown table and a chart.
"""
