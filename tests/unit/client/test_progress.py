"""progress=True bars, and the item counts every result object keeps."""

from __future__ import annotations

import pytest


def square(x):
    return x * x


@pytest.fixture
def pool(eager_pool):
    return eager_pool


def test_map_and_starmap_show_a_bar_counting_items(pool, capsys):
    assert pool.map(square, range(10), chunksize=3, progress=True) == [x * x for x in range(10)]
    assert pool.starmap(pow, [(2, 2)] * 4, progress=True) == [4] * 4
    err = capsys.readouterr().err
    assert "square" in err and "10/10" in err and "pow" in err and "4/4" in err


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_bars_learn_their_total_from_a_generator(pool, capsys, method):
    results = list(getattr(pool, method)(square, (x for x in range(7)), chunksize=2,
                                         progress=True))
    assert sorted(results) == [x * x for x in range(7)]
    assert "7/7" in capsys.readouterr().err


def test_results_count_items_done_out_of_how_many(pool):
    mapped = pool.map_async(square, range(9), chunksize=4)
    mapped.wait()
    assert (mapped.progress.completed, mapped.progress.total) == (9, 9)
    single = pool.apply_async(square, (3,))
    single.wait()
    assert (single.progress.completed, single.progress.total) == (1, 1)
    it = pool.imap(square, iter(range(5)), chunksize=2)
    assert list(it) == [x * x for x in range(5)]
    assert (it.progress.completed, it.progress.total) == (5, 5)


def test_no_bar_unless_asked(pool, capsys):
    pool.map(square, range(5))
    assert capsys.readouterr().err == ""
