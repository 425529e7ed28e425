"""Measuring a model: ``perplexity`` on the fixed masks, ``intervals`` (document
bootstrap), ``pseudolikelihood`` (per-text PLL), ``scoring`` (a saved model, alone or
against a base), ``word_ledger`` (what changed word by word), ``probing``, ``finetuning``
and ``paired_tests`` (does a task gain), ``leakage`` (texts a model trained on),
``vocabulary`` (how the tokenizer splits the domain's words) and ``inference`` (fill-mask).

May import: the foundation, ``system``, ``data``, ``speed`` and ``modeling``.
"""
