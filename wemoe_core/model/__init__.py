"""The vocabulary every layer speaks: parameter names (``keys``), vision towers, heads and the
multi-task model (``towers``), typed hyperparameters (``params``) and batches of images
(``data``).

May import: nothing else of wemoe_core (only ``_version``). Everything else may import it.
"""
