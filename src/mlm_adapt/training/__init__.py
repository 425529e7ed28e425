"""Adapting a model: ``loop`` (the one training path, read top to bottom),
``optimizer_step`` (one step over a run's micro-batches, token-count normalised) and
``checkpoints`` (save, resume exactly, keep the newest).

May import: every stage below; only ``cli`` and ``demo`` import it.
"""
