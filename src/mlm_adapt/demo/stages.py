"""The demo's two training runs and the levers after them, sized to the machine.

Stage 1 fits a masked-LM head (and trains the encoder with it) on the news; stage 2
adapts that model to the reviews. Each is a plain ``train`` config; how many chunks
each trains on is the share of the full demo this machine's measured step time buys
in the budget (``stage_share``, then ``adaptation_share`` once stage 1 has run).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlm_adapt.config import BlendConfig, DataConfig, MaskingConfig, ModelConfig, ProbeConfig, TrainConfig
from mlm_adapt.demo.assets import DemoAssets

log = logging.getLogger("mlm_adapt")

# The full demo's training chunks per stage (500 + 2 x 438 steps of 8); `run_demo` keeps
# the share of them this machine trains in the time budget (`stage_share`). Stage 2 gets
# most: at 43% of the full size an AVX2 CPU's stage 1 reached a news perplexity of 160 in
# 320 steps, far more of a language model than the demo needs (200 steps: 250).
GENERAL_CHUNKS, ADAPT_CHUNKS = 4_000, 3_500
# Chunks a step. A budget of minutes buys few steps, and at an equal number of chunks more,
# smaller steps learn more: stage 1 on 1,600 news chunks (an AVX2 CPU, fp32) reached a
# held-out news perplexity of 583 in steps of 32, 361 of 16 and 250 of 8 (208 of 4, whose
# chunks cost 15% more each). docs/levers.md has the runs.
BATCH = 8
# The evaluations and probes run no backward pass: batches of 32 cost less per chunk.
EVAL_BATCH = 32
# Learning rates at 8 a step: stage 1's the best of 2.5e-4, 4e-4 and 7e-4. Stage 2 at 2e-4,
# 4e-4 and 6e-4 (378 steps from the same news model) ended at review perplexities 160, 150
# and 155 and news perplexities +20%, +41% and +71%: 3e-4 is between the first two.
GENERAL_LR, ADAPT_LR = 4e-4, 3e-4
# Training masks 30% of the tokens, twice BERT's 15% (the held-out sets keep 15%): a step
# costs 5-11% more and learns far more. At equal steps, stage 1: news perplexity 250 -> 192;
# stage 2 from the same news model: reviews 179 -> 154 with less forgetting (news 307 -> 272);
# 45% reached 147 / 264 at 19% more a step. Wettig et al. (2023) found 40% better than 15%
# for BERT-large too.
MASK_PROB = 0.3
# Work outside the training steps, measured on demo runs (an AVX2 CPU, 0.71-0.80 s steps):
# the evaluations, probes and blend cost about OVERHEAD_STEPS training steps (~200 s), of
# which LATE_OVERHEAD_STEPS come after stage 1 (stage 2's evaluations, the probes, the
# blend: 174 s at 0.80 s a step); loading, tokenizing, timing a step, saving and fill-mask
# about 20 s, 10 of them after stage 1. Each *_SECONDS keeps 20 s more for a run's
# variation. The timed steps (5 on random tokens after 2 untimed) read 10% above or below
# the real ones, so stage 2 is sized again once stage 1 has run, from its real steps and
# the time left (``adaptation_share``).
OVERHEAD_STEPS, OVERHEAD_SECONDS = 250, 40
LATE_OVERHEAD_STEPS, LATE_OVERHEAD_SECONDS = 220, 30
TOPIC_ROWS = 500  # the news-topic probe's articles: its accuracy is ~0.96 either way, and each costs two full chunks
# Stage 2 saves the evaluation with the lowest review perplexity among those whose news
# perplexity rose at most FORGETTING percent (evaluated every half epoch); then base and
# adapted model are blended at BLEND_ALPHAS and the largest a within BLEND_FORGETTING kept.
FORGETTING, BLEND_FORGETTING, BLEND_ALPHAS = 10.0, 5.0, (0.0, 0.5, 1.0)
MIN_SHARE = 0.15  # below this the shift is not learnt: take longer than the budget instead


def stage_share(step_seconds: float, minutes: float) -> float:
    """The share of the full demo's training chunks that fits ``minutes`` on a machine
    that takes ``step_seconds`` a step, in [MIN_SHARE, 1]."""
    full_steps = GENERAL_CHUNKS / BATCH + 2 * ADAPT_CHUNKS / BATCH
    affordable = (minutes * 60 - OVERHEAD_SECONDS) / step_seconds - OVERHEAD_STEPS
    return float(min(1.0, max(MIN_SHARE, affordable / full_steps)))


def adaptation_share(step_seconds: float, seconds_left: float) -> float:
    """Stage 2's share of its full size, sized again once stage 1 has run: what fits the
    ``seconds_left`` at stage 1's real ``step_seconds``, with the work after stage 2 (the
    probes, the blend), in [MIN_SHARE, 1]."""
    affordable = (seconds_left - LATE_OVERHEAD_SECONDS) / step_seconds - LATE_OVERHEAD_STEPS
    return float(min(1.0, max(MIN_SHARE, affordable / (2 * ADAPT_CHUNKS / BATCH))))


def stage_configs(assets: DemoAssets, output: Path, overwrite: bool = False, share: float = 1.0) -> tuple[TrainConfig, TrainConfig]:
    """The two runs; ``share`` of the full demo's training chunks in each (see README).

    Stage 1 is kept short on purpose: two epochs on the news made the general model
    already guess "film" and "story" for "This is a great [MASK]." (the BBC set has an
    entertainment section), which hides the effect the demo is there to show.
    Stage 2 measures what adaptation cost on the news (the forgetting check, on the
    documents stage 1 held out) and ends with the review-sentiment probe.
    """
    sentiment = assets.reviews_csv.with_name("sentiment.jsonl")
    # Stage 2's epochs hold an even number of whole steps, evaluated at each half: an epoch
    # end one step after a half-epoch evaluation would evaluate twice in a row.
    half_epoch = max(1, round(share * ADAPT_CHUNKS / BATCH / 2))
    general = TrainConfig(
        model=ModelConfig(str(assets.model_dir)),
        # Some BBC files are Latin-1; Latin-1 also reads the ASCII ones unchanged.
        data=DataConfig(data=str(assets.news_dir), encoding="latin-1", train_size=round(share * GENERAL_CHUNKS), eval_size=300),
        masking=MaskingConfig(mask_prob=MASK_PROB),
        output=output / "general",
        epochs=1, batch_size=BATCH, eval_batch_size=EVAL_BATCH, lr=GENERAL_LR, warmup_ratio=0.06, overwrite=overwrite,
    )
    adapted = TrainConfig(
        model=ModelConfig(str(output / "general")),
        data=DataConfig(data=str(assets.reviews_csv), text_column="text", train_size=2 * BATCH * half_epoch, eval_size=300),
        masking=MaskingConfig(mask_prob=MASK_PROB),
        output=output / "adapted",
        epochs=2, batch_size=BATCH, eval_batch_size=EVAL_BATCH, lr=ADAPT_LR, warmup_ratio=0.06, overwrite=overwrite,
        general_data=str(assets.news_dir), general_encoding="latin-1", task_data=str(sentiment),
        eval_steps=half_epoch, max_forgetting=FORGETTING,
    )
    return general, adapted


def blend_config(general: TrainConfig, adapted: TrainConfig, output: Path, overwrite: bool = False) -> BlendConfig:
    """The lever after stage 2: the general and the adapted model blended, measured on stage
    2's held-out reviews and news, the largest a within BLEND_FORGETTING percent saved."""
    return BlendConfig(base=ModelConfig(str(general.output)), adapted=ModelConfig(str(adapted.output)), data=adapted.data,
                       masking=adapted.masking, alphas=BLEND_ALPHAS, general=adapted.general_data_config(),
                       output=output / "blend", max_forgetting=BLEND_FORGETTING, overwrite=overwrite,
                       batch_size=adapted.evaluation_batch_size(), precision=adapted.precision, seed=adapted.seed)


def topic_probe_config(assets: DemoAssets, general: TrainConfig, adapted: TrainConfig) -> ProbeConfig:
    """The cost side: news topics probed on the general model vs the adapted one."""
    topics = assets.news_dir.with_name("bbc-topics.jsonl")
    return ProbeConfig(models=(ModelConfig(str(general.output)), ModelConfig(str(adapted.output))),
                       data=DataConfig(str(topics)), max_rows=TOPIC_ROWS, seed=adapted.seed)


def sized_configs(assets: DemoAssets, output: Path, overwrite: bool, minutes: float) -> tuple[TrainConfig, TrainConfig, ProbeConfig]:
    """The demo's runs sized from this machine's measured step time to take ``minutes``."""
    from mlm_adapt.training.optimizer_step import measure_step_seconds

    general, _ = stage_configs(assets, output, overwrite)
    seconds, precision = measure_step_seconds(general, steps=5)
    share = stage_share(seconds, minutes)
    log.info("this machine: %.2f s a training step (%s); the demo trains on %.0f%% of its full size to take about "
             "%g minutes", seconds, precision, 100 * share, minutes)
    general, adapted = stage_configs(assets, output, overwrite, share)
    return general, adapted, topic_probe_config(assets, general, adapted)
