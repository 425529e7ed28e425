"""Where a run happens: the device and numeric precision (``runtime``), the Hugging Face
Hub (``hub``: offline mode, uploads) and what of a run may be shown to others
(``disclosure``: local paths become names).

May import: ``mlm_adapt.errors`` and ``mlm_adapt.config``; nothing of the pipeline's stages.
"""
