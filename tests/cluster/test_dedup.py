"""Ids seen lately: a copy within the window is a duplicate; memory stays bounded."""

from __future__ import annotations

from alarmd.cluster.dedup import SeenIds


def test_a_copy_within_the_window_is_a_duplicate_and_after_it_is_not() -> None:
    seen = SeenIds(window=60, size=100)
    assert not seen.check("a", 1000.0)
    assert seen.check("a", 1030.0)
    assert not seen.check("b", 1070.0)  # "a" is forgotten here
    assert not seen.check("a", 1070.0)


def test_at_most_size_ids_are_kept_the_oldest_forgotten_first() -> None:
    seen = SeenIds(window=3600, size=3)
    for i, event_id in enumerate("abcd"):
        seen.check(event_id, 1000.0 + i)
    assert len(seen) == 3
    assert seen.check("d", 1010.0)
    assert not seen.check("a", 1010.0)


def test_the_ids_of_a_partition_whose_judging_was_dropped_are_forgotten() -> None:
    seen = SeenIds(window=60, size=100)
    seen.check("a", 1000.0, partition=3)
    seen.check("b", 1000.0, partition=5)
    assert seen.forget({3}) == 1
    assert not seen.check("a", 1001.0, partition=3), "fetched again, it is judged again"
    assert seen.check("b", 1001.0, partition=5)
