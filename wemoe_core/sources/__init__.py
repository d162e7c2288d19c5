"""Where models, heads and images come from, and how we write them: checkpoint formats
(``checkpoints``, ``pickled``), the Hugging Face Hub (``hub``), local paths and caches
(``paths``), open_clip's pre-trained CLIP (``clip``), zero-shot heads from text (``zeroshot``),
images (``images``), and our own safetensors files and recipes (``files``).

May import: ``model``, ``merging`` (``files`` rebuilds a saved WEMoE).
"""
