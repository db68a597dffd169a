"""kiln's word-level tokenizers (basic_english, whitespace; plus n-grams) as Arrow compute kernels over whole
columns of text — lowercase, regex, split, dictionary-encode — so millions of rows are tokenized without a Python
loop per row. Training, testing and `kiln predict` all tokenize through here, so they split text identically.

basic_english: lowercase; words (letters, digits and underscores, with one inner apostrophe: "don't") and every
other non-space character apart. whitespace: split on runs of white space.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from kiln.config import TextConfig
    from kiln.data.token_store import TokenStore

_W = r"\p{L}\p{N}_"  # what Python's \w matches in str patterns
_SPACE = r"\s\p{Z}\x{0b}\x{1c}-\x{1f}\x{85}"  # what Python's \s matches (str.isspace)
WORDS = rf"([{_W}]+(?:'[{_W}]+)?|[^{_W}{_SPACE}])"
# The same for ASCII text, which RE2 matches many times faster than Unicode classes; a row without an apostrophe
# needs no word pattern at all: spaces around each punctuation character split it the same way.
_AW, _ASPACE = r"A-Za-z0-9_", r"\t\n\v\f\r \x1c-\x1f"
ASCII_WORDS = rf"([{_AW}]+(?:'[{_AW}]+)?|[^{_AW}{_ASPACE}])"
ASCII_PUNCT = rf"[^{_AW}{_ASPACE}']"
PIECE = 1 << 15  # rows a thread works on at a time


def word_lists(texts: Any, cfg: TextConfig) -> Any:
    """Each text's tokens (a pyarrow LargeListArray of strings; n-grams not yet added), pieces of the column spaced
    out in parallel threads (Arrow's kernels release the GIL)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = pa.array(texts, pa.large_string()) if not isinstance(texts, (pa.Array, pa.ChunkedArray)) else texts
    texts = pc.fill_null(texts.cast(pa.large_string()), "")
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    pieces = [texts.slice(start, PIECE) for start in range(0, len(texts), PIECE)] or [texts]
    if len(pieces) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(len(pieces), os.cpu_count() or 1)) as pool:
            spaced = pa.concat_arrays(list(pool.map(lambda piece: _spaced(piece, cfg), pieces)))
    else:
        spaced = _spaced(pieces[0], cfg)
    lists = pc.ascii_split_whitespace(spaced)
    flat = pc.list_flatten(lists)
    keep = pc.greater(pc.binary_length(flat), 0)
    kept_rows = np.asarray(pc.list_parent_indices(lists).filter(keep))
    lengths = np.bincount(kept_rows, minlength=len(lists)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), flat.filter(keep))


def _spaced(texts: Any, cfg: TextConfig) -> Any:
    """The texts with their tokens apart and only ASCII white space between them: ASCII rows by the fast patterns,
    the rest by the Unicode ones, put back in their order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = pc.replace_substring(pc.replace_substring(texts, "\\n", " "), "\\", " ")  # AG News' escaped breaks
    if cfg.tokenizer != "whitespace":
        texts = pc.utf8_lower(texts)
    ascii_rows = pc.string_is_ascii(texts)
    groups = [(pc.invert(ascii_rows), _unicode_spaced)]
    if cfg.tokenizer != "whitespace":
        quoted = pc.match_substring(texts, "'")
        groups += [(pc.and_(ascii_rows, quoted), _ascii_words), (pc.and_not(ascii_rows, quoted), _ascii_punct)]
    else:
        groups += [(ascii_rows, _ascii_separators)]
    order, parts = [], []
    for mask, space_out in groups:
        rows = np.flatnonzero(np.asarray(mask.fill_null(False)))
        if len(rows):
            order.append(rows)
            parts.append(space_out(texts.take(pa.array(rows)), cfg))
    if not parts:
        return texts
    where = np.argsort(np.concatenate(order), kind="stable")
    return pa.concat_arrays(parts).take(pa.array(where))


def _unicode_spaced(texts: Any, cfg: TextConfig) -> Any:
    import pyarrow.compute as pc

    if cfg.tokenizer != "whitespace":
        texts = pc.replace_substring_regex(texts, WORDS, r" \1 ")
    return pc.replace_substring_regex(texts, f"[{_SPACE}]+", " ")  # Python's white space, which Arrow's split misses


def _ascii_words(texts: Any, cfg: TextConfig) -> Any:
    import pyarrow.compute as pc

    return _ascii_separators(pc.replace_substring_regex(texts, ASCII_WORDS, r" \1 "), cfg)


def _ascii_punct(texts: Any, cfg: TextConfig) -> Any:
    import pyarrow.compute as pc

    return _ascii_separators(pc.replace_substring_regex(texts, ASCII_PUNCT, r" \0 "), cfg)


def _ascii_separators(texts: Any, cfg: TextConfig) -> Any:
    """The information separators \\x1c-\\x1f are white space to Python, not to Arrow's split."""
    import pyarrow.compute as pc

    if pc.any(pc.match_substring_regex(texts, r"[\x1c-\x1f]")).as_py():
        return pc.replace_substring_regex(texts, r"[\x1c-\x1f]", " ")
    return texts


def number_tokens(texts: Any, cfg: TextConfig, numbers: dict[str, int]) -> TokenStore:
    """The texts' tokens (n-grams included, in the order tokenize() gives them) as numbers into `numbers`, which is
    extended with the tokens it has not seen; a chunk of rows at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from kiln.data.token_store import TokenStore

    lists = word_lists(texts, cfg)
    flat = pc.list_flatten(lists)
    offsets = np.asarray(lists.offsets).astype(np.int64)
    if cfg.ngrams > 1:
        flat, offsets = _with_ngrams(flat, offsets, cfg.ngrams)
    encoded = pc.dictionary_encode(flat).combine_chunks() if isinstance(flat, pa.ChunkedArray) else \
        pc.dictionary_encode(flat)
    local = encoded.dictionary.to_pylist()
    new = [t for t in local if t not in numbers]
    numbers.update(zip(new, range(len(numbers), len(numbers) + len(new))))
    table = np.fromiter(map(numbers.__getitem__, local), dtype=np.int32, count=len(local))
    ids = table[np.asarray(encoded.indices, dtype=np.int64)] if len(local) else np.zeros(0, np.int32)
    return TokenStore(ids.astype(np.int32), offsets)


def _with_ngrams(flat: Any, offsets: np.ndarray, ngrams: int) -> tuple[Any, np.ndarray]:
    """Each row's unigrams, then its bigrams, then trigrams ... (as tokenize() lists them): n-grams are joined
    from the flat token array where all n tokens lie in one row, then every token is put in its row's order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = np.diff(offsets)
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    parts, rows, ranks = [flat], [row_of], [np.zeros(len(flat), np.int64)]
    for n in range(2, ngrams + 1):
        starts = np.arange(max(len(flat) - n + 1, 0))
        same = row_of[starts] == row_of[starts + n - 1] if len(starts) else np.zeros(0, bool)
        starts = starts[same]
        pieces = [flat.take(pa.array(starts + k)) for k in range(n)]
        parts.append(pc.binary_join_element_wise(*pieces, pa.scalar(" ", pa.large_string())))
        rows.append(row_of[starts])
        ranks.append(np.full(len(starts), n - 1, np.int64))
    order = np.lexsort((np.concatenate(ranks), np.concatenate(rows)))  # by row, then n, then position (stable)
    tokens = pa.concat_arrays([p.cast(pa.large_string()) for p in parts]).take(pa.array(order))
    counts = np.bincount(np.concatenate(rows), minlength=len(lengths)).astype(np.int64)
    return tokens, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def tokenize_texts(texts: list[str], cfg: TextConfig) -> list[list[str]]:
    """The tokens of each text, n-grams included (a few texts: kiln predict, a vocabulary from lists)."""
    numbers: dict[str, int] = {}
    store = number_tokens(texts, cfg, numbers)
    names = list(numbers)
    return [[names[i] for i in store.row(r).tolist()] for r in range(len(store))]
