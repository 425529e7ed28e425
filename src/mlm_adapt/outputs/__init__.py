"""What a run leaves behind: ``artifacts`` (the model folder, written atomically),
``model_card`` (README.md), ``reporting`` (report.html and its plots) and ``summaries``
(what the commands print).

May import: every stage below (foundation, ``system``, ``data``, ``speed``, ``modeling``,
``evaluation``); never ``training``, ``cli`` or ``demo``.
"""
