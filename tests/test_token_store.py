"""The compact token store: selecting, truncating, mapping and filling rows as array operations give exactly
what the same operations on Python lists give; the cache round-trips it memory-mapped."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.data.token_store import TokenStore

rows_of_ids = st.lists(st.lists(st.integers(0, 50), max_size=12), max_size=20)


@settings(max_examples=60, deadline=None)
@given(rows=rows_of_ids, data=st.data())
def test_store_operations_match_list_operations(rows, data):
    store = TokenStore.from_rows(rows)
    assert len(store) == len(rows) and [store.row(i).tolist() for i in range(len(rows))] == rows
    picked = data.draw(st.lists(st.integers(0, max(len(rows) - 1, 0)), max_size=15)) if rows else []
    taken = store.take(picked)
    assert [taken.row(i).tolist() for i in range(len(picked))] == [rows[i] for i in picked]
    max_len = data.draw(st.integers(1, 6))
    cut = store.truncate(max_len)
    assert [cut.row(i).tolist() for i in range(len(rows))] == [r[:max_len] for r in rows]
    table = np.arange(51, dtype=np.int32)[::-1].copy()
    mapped = store.map(table).fill_empty(99)
    assert [mapped.row(i).tolist() for i in range(len(rows))] == [[50 - t for t in r] or [99] for r in rows]
    copy = store.take(list(range(len(rows))))
    assert copy.map(table, in_place=True).ids.tolist() == store.map(table).ids.tolist()
    if rows:
        counted = store.counts(picked, 51)
        assert counted.tolist() == [sum(rows[i].count(t) for i in picked) for t in range(51)]
    halves = TokenStore.concat([TokenStore.from_rows(rows[:3]), TokenStore.from_rows(rows[3:])])
    assert [halves.row(i).tolist() for i in range(len(rows))] == rows


def test_store_saves_and_loads_memory_mapped(tmp_path):
    store = TokenStore.from_rows([[1, 2, 3], [], [4]])
    store.save(tmp_path)
    back = TokenStore.load(tmp_path)
    assert isinstance(back.ids, np.memmap) and [back.row(i).tolist() for i in range(3)] == [[1, 2, 3], [], [4]]
    assert back.take([2, 0]).ids.tolist() == [4, 1, 2, 3]


def test_gathering_in_chunks_gives_the_same_rows(monkeypatch):
    from kiln.data import token_store

    rows = [[i] * (i % 5) for i in range(40)]
    store = TokenStore.from_rows(rows)
    whole = store.take(list(range(39, -1, -1)))
    monkeypatch.setattr(token_store, "GATHER_ROWS", 3)  # 14 chunks instead of one
    chunked = store.take(list(range(39, -1, -1)))
    assert chunked.ids.tolist() == whole.ids.tolist() and chunked.offsets.tolist() == whole.offsets.tolist()
    assert [chunked.row(i).tolist() for i in range(40)] == rows[::-1]
