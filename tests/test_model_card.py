"""The model card's shared sentences: what the card, report.html and the summary say."""

from __future__ import annotations

from mlm_adapt.outputs.model_card import public_name, verdict, with_interval_text


def _metrics(low: float, high: float, **extra) -> dict:
    return {"perplexity_before": 300.0, "perplexity_after": 150.0, "perplexity_change_interval": [low, high],
            "change_exceeds_noise": not (low <= 1.0 <= high), "interval_resamples": "120 documents", **extra}


def test_verdict_says_whether_the_change_is_beyond_noise_and_what_was_resampled():
    beyond = verdict(_metrics(0.45, 0.55))
    assert "300.0 -> 150.0" in beyond and "beyond resampling noise" in beyond and "resampling 120 documents" in beyond
    assert "within resampling noise" in verdict(_metrics(0.9, 1.1))
    general = verdict(_metrics(0.45, 0.55, general_data="news", general_perplexity_before=100.0,
                               general_perplexity_after=120.0, general_perplexity_change_interval=[1.1, 1.3],
                               general_change_exceeds_noise=True))
    assert "general text 100.0 -> 120.0" in general and general.count("beyond") == 2


def test_interval_text_and_public_names(tmp_path):
    assert with_interval_text(151.1719, [139.3, 165.15]) == "151.172 (95% interval 139.300-165.150)"
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert public_name(str(folder)) == "my-model"  # a card is for publishing: no local paths
    assert public_name("distilbert-base-uncased") == "distilbert-base-uncased"


def test_no_verdict_and_no_95_percent_label_from_too_few_documents():
    for resamples, reason in (("8 documents", "only 8 held-out documents: the interval is unreliable"),
                              ("30 chunks", "not a 95% interval")):
        text = verdict(_metrics(0.45, 0.55, interval_resamples=resamples, change_exceeds_noise=None))
        assert reason in text and "no verdict" in text and "beyond" not in text and "95% interval 0" not in text
