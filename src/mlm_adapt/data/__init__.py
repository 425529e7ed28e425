"""The data stage: text in, masked chunks out.

``corpus`` reads ``--data`` (files, folders, the Hub; in memory or streamed),
``tokenization`` turns it into token ids (with each token's word), ``chunking`` and
``chunk_stream`` cut the ids into fixed-length chunks and hold documents out,
``packing`` marks where packed documents end, ``masking`` draws the masks (pure, seeded
by ``seeding``), ``held_out`` masks the evaluation chunks once, ``batching`` yields a
run's micro-batches and ``splits`` is the one boundary the rest sees: held-out chunks
and a training source. ``duplicates`` says which documents are copies or near copies (MinHash).

May import: ``mlm_adapt.errors``, ``mlm_adapt.config`` and ``system``; never a model.
"""
