"""The merging methods: static merges over state dicts (``static``), AdaMerging's learned
coefficients (``adamerging``), WEMoE (``wemoe``) and its expert layers (``experts``), and the one
extension point, ``registry.METHODS``. Methods never open files.

May import: ``model``.
"""
