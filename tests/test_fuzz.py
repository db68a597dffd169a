"""Property-based fuzzing of every reader of user files and arguments: the only outcomes are success or kiln's own
error (KilnError: exit 2 with a message) — never another exception type. In-process and bounded."""

import gzip
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kiln.config import TextConfig, load_config
from kiln.core.errors import KilnError
from kiln.core.state import load_checkpoint, save_checkpoint
from kiln.data.csv_rows import read_rows
from kiln.data.idx import read_idx, write_idx
from kiln.data.registry import get_dataset

# derandomize: the same examples every run, so CI is repeatable; raise max_examples locally to search further.
FUZZ = settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                database=None)
TMP = Path(tempfile.mkdtemp(prefix="kiln-fuzz-"))

KEYS = st.sampled_from(["name", "seed", "data", "model", "optim", "trainer", "task", "schedule", "log", "base",
                        "batch_size", "lr", "epochs", "args", "val_split", "label_smoothing", "zzz", "1", ""])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)


def _only_kiln_errors(fn, *args):
    try:
        return fn(*args)
    except KilnError as e:
        assert str(e).strip(), "a KilnError must carry a message"
        return None


@FUZZ
@given(TREES)
@example({"base": False})  # found by this test: base: must be a path
@example({"base": ""})
def test_config_files_of_any_shape(tree):
    path = TMP / "fuzz.yaml"
    path.write_text(yaml.safe_dump(tree))
    _only_kiln_errors(load_config, path)


@FUZZ
@given(st.text(max_size=200))
@example("base: fuzz_text.yaml")  # a file that is its own base
@example("data: {name: [1, 2]}")
@example("{{{")
def test_config_text_of_any_kind(text):
    path = TMP / "fuzz_text.yaml"
    path.write_text(text)
    _only_kiln_errors(load_config, path)
    json_path = TMP / "fuzz.json"
    json_path.write_text(text)
    _only_kiln_errors(load_config, json_path)


@FUZZ
@given(st.lists(st.text(max_size=30), max_size=5))
@example(["optim.lr=0.1", "optim=3"])  # a value and a section for the same key
@example(["trainer.epochs=[", "=", "a..b=1"])
def test_overrides_of_any_kind(overrides):
    _only_kiln_errors(load_config, None, overrides)


def _valid_idx() -> bytes:
    path = TMP / "valid.idx"
    write_idx(path, torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4))
    return path.read_bytes()


VALID_IDX = _valid_idx()


@FUZZ
@given(st.binary(max_size=64))
def test_idx_reader_on_arbitrary_bytes(data):
    path = TMP / "any.idx"
    path.write_bytes(data)
    _only_kiln_errors(read_idx, path)
    gz = TMP / "any.idx.gz"
    gz.write_bytes(data)  # not gzip data, though the name says so
    _only_kiln_errors(read_idx, gz)


@FUZZ
@given(st.integers(0, len(VALID_IDX)), st.integers(0, len(VALID_IDX) - 1), st.integers(1, 255))
def test_idx_reader_on_truncated_or_flipped_files(cut, at, xor):
    data = bytearray(VALID_IDX)
    data[at] ^= xor
    path = TMP / "mut.idx.gz"
    path.write_bytes(gzip.compress(bytes(data[:cut])))
    result = _only_kiln_errors(read_idx, path)
    assert result is None or isinstance(result, torch.Tensor)


CSV_TEXT = st.text(alphabet=st.sampled_from(list('ab,"\n\r1 2\\\t;éx')), max_size=80)


@FUZZ
@given(CSV_TEXT)
@example('1,"unclosed\n')
@example('"class index","title"\n\n\n')
def test_csv_readers_on_any_text(text):
    path = TMP / "rows.csv"
    path.write_text(text, encoding="utf-8")
    for name, cfg in (("ag_news", TextConfig()), ("text_csv", TextConfig(on_bad_row="skip")),
                      ("text_csv", TextConfig(text_columns=["a", "b"], label_column="x"))):
        _only_kiln_errors(read_rows, path, get_dataset(name), cfg)


@FUZZ
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab|1.-e+ \t,x")), max_size=12), min_size=1, max_size=6))
@example(["nan", "inf", "1e309", "-.5"])
def test_label_cells_of_any_kind_become_targets_or_a_named_problem(cells):
    """Label sets (multilabel) and numbers (regression) from arbitrary cells: a target, or the reason it is not."""
    from kiln.data.csv_rows import UNIT, Rows, row_targets

    rows = Rows(["text"] * len(cells), cells)
    for task, names in (("multilabel", ["a", "b", "1"]), ("regression", ["y"]), ("multiclass", ["a", "b"])):
        targets, kept = row_targets(rows, names, TMP / "cells.csv", TextConfig(on_bad_row="skip"), task)
        assert len(targets) == len(kept) <= len(cells)
        if task == "regression":
            assert all(len(t) == 1 and abs(t[0]) < float("inf") for t in targets)  # finite numbers only
        if task == "multilabel":
            assert all(len(t) == 3 and set(t) <= {0.0, 1.0} for t in targets)
    assert UNIT not in "".join(cells)


def _valid_checkpoint() -> bytes:
    path = TMP / "valid.pt"
    model = torch.nn.Linear(3, 2)
    save_checkpoint(path, {"model": model.state_dict(), "loop": {"epoch": 1}, "config": {"name": "x"}})
    return path.read_bytes()


VALID_CHECKPOINT = _valid_checkpoint()


@FUZZ
@given(st.integers(0, len(VALID_CHECKPOINT)), st.integers(0, len(VALID_CHECKPOINT) - 1), st.integers(1, 255))
@example(cut=len(VALID_CHECKPOINT) // 2, at=len(VALID_CHECKPOINT) - 1, xor=1)  # found by this test: a
# truncated file raised EOFError without a message, and kiln's message then failed on it
def test_checkpoint_loading_of_truncated_or_flipped_files(cut, at, xor):
    data = bytearray(VALID_CHECKPOINT)
    data[at] ^= xor
    path = TMP / "mut.pt"
    path.write_bytes(bytes(data[:cut]))
    state = _only_kiln_errors(load_checkpoint, path)
    if state is not None:  # if it loads, it is the checkpoint as written: a changed tensor cannot pass
        assert torch.equal(state["model"]["weight"], torch.load(TMP / "valid.pt", weights_only=True)["model"]["weight"])


@pytest.mark.parametrize("junk", [b"", b"\x00" * 10, b"PK\x03\x04" + b"\x00" * 40, b"\x80\x04K\x01."])
def test_checkpoint_regressions(junk):
    path = TMP / "junk.pt"
    path.write_bytes(junk)
    with pytest.raises(KilnError):
        load_checkpoint(path)
