"""Running methods on pools: the test-time adaptation loop (``adapt``), accuracy and
explanations (``evaluate``), the facade the CLI and app use (``workbench``), the benchmark
suite (``suite``), the teaching analyses (``analysis``) and exports (``export``).

May import: anything of wemoe_core below it (``model``, ``merging``, ``sources``, ``pools``).
"""
