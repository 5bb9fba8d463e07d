"""The repository's board cache: a board is used only at its exact (layout, seq), and a later
board is never replaced by an earlier one remembered late."""

from __future__ import annotations

from tests.unit.test_rules import make_board
from whiteboard.store.repository import BoardCache


def test_a_board_is_found_only_at_its_seq_and_layout() -> None:
    cache = BoardCache()
    board = make_board("W01", seq=7)
    cache.put(board, layout_version=2)
    assert cache.get("W01", 7, 2) is board
    assert cache.get("W01", 8, 2) is None  # another process wrote since
    assert cache.get("W01", 7, 3) is None  # the layout was loaded again
    assert cache.get("W02", 7, 2) is None


def test_a_write_remembered_late_does_not_replace_a_later_one() -> None:
    """Two writes to one ward commit as seq 8 then 9 but are remembered 9 then 8: the cache
    must keep 9, or every following write finds it one behind and reads the ward again."""
    cache = BoardCache()
    eight, nine = make_board("W01", seq=8), make_board("W01", seq=9)
    cache.put(nine, layout_version=1)
    cache.put(eight, layout_version=1)
    assert cache.get("W01", 9, 1) is nine


def test_a_new_layout_replaces_any_board_of_the_old_one() -> None:
    cache = BoardCache()
    cache.put(make_board("W01", seq=9), layout_version=1)
    fresh = make_board("W01", seq=9)
    cache.put(fresh, layout_version=2)
    assert cache.get("W01", 9, 2) is fresh


def test_the_cache_holds_at_most_its_limit_of_wards() -> None:
    cache = BoardCache(limit=2)
    for ward in ("W01", "W02", "W03"):
        cache.put(make_board(ward), layout_version=1)
    assert cache.get("W01", 0, 1) is None  # the oldest went
    assert cache.get("W03", 0, 1) is not None
