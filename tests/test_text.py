"""Text data: CSV reading, tokenizer, vocabulary, collate, bucketing, models, and the CLI end to end."""

import csv
import json

import pytest
import torch

from conftest import only_run, write_config
from fakedata import write_ag_news
from kiln.cli import main
from kiln.config import DataConfig, ModelConfig, TextConfig
from kiln.core.errors import KilnError
from kiln.data import DataRequest, build_data
from kiln.data.csv_rows import read_rows
from kiln.data.loaders import BucketBatchSampler
from kiln.data.registry import get_dataset
from kiln.data.text import offsets_collate, pad_collate
from kiln.data.vocab import Vocab, tokenize
from kiln.models import build_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def news_root(tmp_path_factory):
    return write_ag_news(tmp_path_factory.mktemp("ag_news"))


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE", str(tmp_path / "cache"))


def text_config(tmp_path, root, **trainer):
    return {
        "name": "news", "seed": 1,
        "data": {"name": "ag_news", "root": str(root), "batch_size": 16, "val_split": 80,
                 "text": {"ngrams": 2, "collate": "offsets"}},
        "model": {"name": "embedding_bag", "args": {"embed_dim": 32}},
        "optim": {"name": "adamw", "lr": 0.05},
        "trainer": {"epochs": 3, "log_every_n_steps": 5, **trainer},
        "log": {"dir": str(tmp_path / "runs"), "progress": "none"},
    }


def test_tokenizer_splits_punctuation_and_adds_bigrams():
    cfg = TextConfig(ngrams=2)
    assert tokenize("Wall St. Bears, Claw!", TextConfig()) == ["wall", "st", ".", "bears", ",", "claw", "!"]
    assert tokenize("New York's café", cfg) == ["new", "york's", "café", "new york's", "york's café"]
    assert tokenize(r"line one\nline two", TextConfig()) == ["line", "one", "line", "two"]


def test_ag_news_rows_keep_quotes_commas_unicode_and_empty_fields(news_root):
    rows = read_rows(news_root / "train.csv", get_dataset("ag_news"), TextConfig())
    assert len(rows.texts) == 400 and set(rows.labels) == {"1", "2", "3", "4"}
    assert any('"' in t and "," in t for t in rows.texts)
    assert any(t.endswith(" ") for t in rows.texts)  # empty description
    assert any("café" in t or "über" in t for t in rows.texts)


def test_malformed_rows_name_file_and_line(tmp_path):
    folder = write_ag_news(tmp_path / "bad", 30, 10)
    lines = (folder / "train.csv").read_text(encoding="utf-8").splitlines()
    lines[4] = '"2","only a title"'
    lines[9] = '"x","title","desc"'
    (folder / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = DataConfig(name="ag_news", root=folder, val_split=0)
    with pytest.raises(KilnError, match=r"train.csv, line 5: malformed row \(expected 3 columns, found 2\)"):
        build_data(cfg, DataRequest(seed=0, device=CPU, splits=("train",)))
    cfg = cfg.with_values({"text.on_bad_row": "skip"})
    data = build_data(cfg, DataRequest(seed=0, device=CPU, splits=("train",)))
    assert data.sizes["train"] == 28  # the short row and the non-integer label were skipped


def test_out_of_range_label_is_an_error(tmp_path):
    folder = write_ag_news(tmp_path / "bad", 30, 10)
    with open(folder / "test.csv", "a", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerow([7, "title", "desc"])
    with pytest.raises(KilnError, match=r"test.csv: row 11: label '7' is not a class \(1..4\)"):
        build_data(DataConfig(name="ag_news", root=folder), DataRequest(seed=0, device=CPU, splits=("test",)))


def test_vocab_from_training_split_only(news_root):
    data = build_data(DataConfig(name="ag_news", root=news_root, val_split=80), DataRequest(seed=0, device=CPU))
    vocab = data.vocab
    assert vocab.itos[:2] == ["<pad>", "<unk>"] and data.info.vocab_size == len(vocab)
    assert data.info.num_classes == 4 and data.info.class_names[1] == "Sports"
    small = Vocab.build([["a", "b", "b"], ["b", "c"]], min_freq=2)
    assert small.itos == ["<pad>", "<unk>", "b"] and small.encode(["b", "zzz"]) == [2, 1]
    assert small.encode([]) == [1]  # never an empty sequence
    assert Vocab.build([["a", "b", "b", "c", "c", "c"]], max_size=4).itos == ["<pad>", "<unk>", "c", "b"]


def test_collate_pads_masks_and_offsets():
    seqs = [torch.tensor([5, 6, 7]), torch.tensor([8]), torch.tensor([9, 10])]
    batch = pad_collate(seqs, pad_id=0)
    assert batch.ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert batch.lengths.tolist() == [3, 1, 2] and batch.mask.sum(1).tolist() == [3, 1, 2]
    assert pad_collate(seqs, pad_id=0, max_len=2).ids.shape == (3, 2)
    flat = offsets_collate(seqs)
    assert flat.ids.tolist() == [5, 6, 7, 8, 9, 10] and flat.offsets.tolist() == [0, 3, 4]


@pytest.mark.parametrize("name, args", [("embedding_bag", {}), ("gru", {}), ("gru", {"bidirectional": False}),
                                        ("transformer", {}), ("transformer", {"pooling": "cls",
                                                                              "positions": "sinusoidal"})])
def test_padding_never_changes_a_models_output(name, args):
    from kiln.data import DataInfo

    info = DataInfo("t", "text", 4, list("abcd"), vocab_size=50, pad_id=0)
    model = build_model(ModelConfig(name=name, args=args), info).eval()
    seqs = [torch.randint(2, 50, (n,)) for n in (7, 3, 12)]
    short = pad_collate(seqs, 0)
    longer = pad_collate([*seqs, torch.randint(2, 50, (30,))], 0)  # forces 18 more padding columns
    with torch.no_grad():
        a, b = model(short), model(longer)[:3]
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    if name == "embedding_bag":
        assert torch.allclose(a, model(offsets_collate(seqs)), atol=1e-6)


def test_bucketing_cuts_padding_and_covers_every_sample():
    lengths = torch.randint(1, 100, (1000,), generator=torch.Generator().manual_seed(0))
    sampler = BucketBatchSampler(lengths, 20, seed=0)
    batches = sampler.batches(3)
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    assert sampler.batches(3)[5].tolist() == batches[5].tolist() and sampler.batches(4)[5].tolist() != batches[5].tolist()

    def waste(bs):
        return 1 - sum(lengths[b].sum().item() for b in bs) / sum(lengths[b].max().item() * len(b) for b in bs)

    random_batches = list(torch.randperm(1000, generator=torch.Generator().manual_seed(1)).split(20))
    assert waste(batches) < 0.5 * waste(random_batches)


def test_train_test_predict_resume_through_the_cli(tmp_path, news_root, monkeypatch, capsys):
    """In process (test_train_cli runs the real entry point): train, test, predict and resume as commands."""
    cfg = text_config(tmp_path, news_root)
    monkeypatch.setenv("KILN_CACHE", str(tmp_path / "cache"))
    assert main(["train", str(write_config(tmp_path, cfg))]) == 0
    run = only_run(tmp_path / "runs")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val/acc"] > 0.7  # chance is 0.25
    assert rows[-1]["train/pad_fraction"] == 0.0  # offsets batches have no padding
    test_metrics = json.loads((run / "test_metrics.json").read_text())
    assert test_metrics["acc"] > 0.7 and len(test_metrics["confusion_matrix"]) == 4

    vocab = json.loads((run / "vocab.json").read_text())["itos"]
    assert vocab[:2] == ["<pad>", "<unk>"] and "election" in vocab
    capsys.readouterr()
    assert main(["test", str(run)]) == 0
    assert "cache hit" in capsys.readouterr().err  # the test split was tokenized during training

    assert main(["predict", str(run), "The minister signed the treaty at the embassy",
                 "Investors cheered the merger as shares rose"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "World" in lines[0] and "Business" in lines[1]

    assert main(["train", "--resume", str(run), "trainer.epochs=4"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4


def test_text_csv_with_header_names_and_prediction_file(tmp_path, cli, monkeypatch):
    folder = tmp_path / "reviews"
    folder.mkdir()
    for name, n in (("train.csv", 240), ("test.csv", 60)):
        with open(folder / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "review", "sentiment"])
            for i in range(n):
                good = i % 2 == 0
                w.writerow([i, ("great wonderful loved it" if good else "awful boring hated it") + f" item {i}",
                            "pos" if good else "neg"])
    (tmp_path / "rows.csv").write_text("id,review\n1,loved it great\n2,\"boring, awful\"\n")
    cfg = {"name": "reviews", "data": {"name": "text_csv", "root": str(folder), "batch_size": 16, "val_split": 40,
                                       "text": {"text_columns": ["review"], "label_column": "sentiment",
                                                "bucket": True}},
           "model": {"name": "gru", "args": {"embed_dim": 16, "hidden": 16}},
           "optim": {"lr": 0.01}, "trainer": {"epochs": 3},
           "log": {"dir": str(tmp_path / "runs"), "progress": "none", "tensorboard": False}}
    monkeypatch.setenv("KILN_CACHE", str(tmp_path / "cache"))
    result = cli("train", write_config(tmp_path, cfg))
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path / "runs")
    assert json.loads((run / "test_metrics.json").read_text())["class_names"] == ["neg", "pos"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= rows[-1]["train/pad_fraction"] < 0.3
    result = cli("predict", run, "--file", tmp_path / "rows.csv")
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip().splitlines()
    assert out[0].split()[0] == "pos" and out[1].split()[0] == "neg"


@pytest.fixture
def kiln_log(caplog):
    """caplog for the 'kiln' logger, which does not propagate to the root once the CLI has set it up."""
    import logging

    logger = logging.getLogger("kiln")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def test_second_run_hits_the_token_cache(tmp_path, news_root, kiln_log):
    import logging

    caplog = kiln_log
    cfg = DataConfig(name="ag_news", root=news_root)
    with caplog.at_level(logging.INFO, logger="kiln"):
        build_data(cfg, DataRequest(seed=0, device=CPU, splits=("train",)))
        assert "cache hit" not in caplog.text
        first = build_data(cfg, DataRequest(seed=0, device=CPU, splits=("train",)))
        assert "train.csv: cache hit" in caplog.text
    cfg = cfg.with_values({"text.ngrams": 2})  # other tokenizer settings: another cache entry
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kiln"):
        second = build_data(cfg, DataRequest(seed=0, device=CPU, splits=("train",)))
    assert "cache hit" not in caplog.text and len(second.vocab) > len(first.vocab)


@pytest.mark.parametrize("config, epochs", [("ag_news.yaml", 6), ("ag_news_transformer.yaml", 6)])
def test_shipped_text_configs_learn_the_synthetic_news(tmp_path, news_root, config, epochs):
    from pathlib import Path

    from kiln.config import load_config
    from kiln.train import session

    path = Path(__file__).resolve().parents[1] / "configs" / config
    cfg = load_config(path, [f"data.root={news_root}", f"trainer.epochs={epochs}", "data.batch_size=16",
                             f"log.dir={tmp_path}", "log.tensorboard=false", "data.val_split=80"])
    result = session.train(cfg, quiet=True)
    assert result.test_metrics["acc"] > 0.6, result.metrics
