"""Prompt-lookup drafting: which tokens get proposed (the decode loop itself is tested with the real
model in test_engine_hf.py)."""

from routesh.engine.lookup import propose


def test_longest_ngram_most_recent_occurrence():
    assert propose([1, 2, 3, 9, 1, 2]) == [3, 9, 1, 2]
    assert propose([7, 1, 2, 5, 5, 1, 2, 6, 1, 2], draft=2) == [6, 1]  # the later "1 2" wins


def test_reference_is_searched_first():
    assert propose([5, 1, 2], reference=[7, 1, 2, 8, 8, 8]) == [8, 8, 8]
    assert propose([4], reference=[4, 6, 7]) == [6, 7]
    # a longer match in the sequence beats a shorter one in the reference
    assert propose([3, 1, 2, 0, 3, 1, 2], reference=[2, 9]) == [0, 3, 1, 2]


def test_nothing_to_propose():
    assert propose([]) == []
    assert propose([1, 2, 3]) == []
    assert propose([1, 2, 1], draft=0) == []
