"""Measuring a model: ``perplexity`` on the fixed masks, ``intervals`` (document
bootstrap), ``pseudolikelihood`` (per-text PLL), ``scoring`` (a saved model, alone or
against a base), ``probing`` and ``finetuning`` (does a task gain), ``vocabulary`` (how
the tokenizer splits the domain's words) and ``inference`` (fill-mask).

May import: the foundation, ``system``, ``data``, ``speed`` and ``modeling``.
"""
