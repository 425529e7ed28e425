"""The model stage: ``loading`` (a masked LM and its tokenizer, in float32, and what its
family implies for inputs), ``objective`` (the one masked-token loss, and a host batch on
a device) and ``preparation`` (model, tokenizer, chunks and the once-masked held-out sets
before a run or an evaluation).

May import: ``mlm_adapt.errors``, ``mlm_adapt.config``, ``system``, ``data`` and ``speed``.
"""
