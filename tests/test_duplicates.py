"""Near-duplicate documents (MinHash over word 3-grams): what assess's near-duplicate share counts."""

from __future__ import annotations

import random
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_adapt.data.duplicates import near_duplicate_groups, shingles


def _text(rng: random.Random, words: int) -> str:
    return " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(6)) for _ in range(words))


def _variant(text: str, rng: random.Random) -> str:
    """A copy as corpora hold them: recased, respaced, punctuated, or its last word changed."""
    words = text.split()
    kind = rng.randrange(4)
    if kind == 0:
        return text.upper()
    if kind == 1:
        return "  ".join(words) + "\n"
    if kind == 2:
        return ", ".join(words) + "!"
    return " ".join(words[:-1] + [_text(rng, 1)])


@given(picks=st.lists(st.integers(0, 9), min_size=1, max_size=40), seed=st.integers(0, 999))
@settings(max_examples=40, deadline=None)
def test_documents_share_a_group_exactly_when_copied_from_one_source(picks, seed):
    rng = random.Random(seed)
    sources = [_text(rng, 30) for _ in range(10)]  # unrelated: random words
    texts = [_variant(sources[k], rng) for k in picks]
    groups = near_duplicate_groups(texts)
    for a in range(len(texts)):
        for b in range(a + 1, len(texts)):
            assert (groups[a] == groups[b]) == (picks[a] == picks[b]), (texts[a], texts[b])


def test_a_review_with_a_few_words_changed_is_a_near_duplicate_and_a_short_text_is_its_own_shingle():
    review = "About a Boy will warm your heart without making you feel guilty about it, and the cast is a delight throughout."
    edited = "Will warm your heart without making you feel guilty about it, and the cast is a delight throughout."
    other = "A tedious, overlong thriller whose twists arrive long after the audience has stopped caring."
    groups = near_duplicate_groups([review, edited, other])
    assert groups[0] == groups[1] != groups[2]
    assert shingles("Great film!") == [b"great film"] and shingles("") == [b""]
    assert len(set(near_duplicate_groups(["", "", "  "]))) == 1  # empty documents are copies of each other
