"""Hugging Face text encoders (`model.name: hf:PATH`): a tiny BERT and a WordPiece tokenizer made by the test and
saved with save_pretrained, fine-tuned for the three tasks, tested, predicted, exported to ONNX and resumed."""

import json

import pytest
import torch
import yaml

from conftest import only_run, write_config
from fakedata import write_ag_news, write_multilabel_text_csv, write_regression_text_csv, write_tiny_bert
from kiln.cli import main
from kiln.config import ModelConfig, build_config
from kiln.core.errors import TrainingInterrupted
from kiln.core.state import load_checkpoint
from kiln.data import DataInfo
from kiln.data.text import pad_collate
from kiln.models import prepare_model
from kiln.train import session
from kiln.train.callbacks import LambdaCallback

pytest.importorskip("transformers")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def news_root(tmp_path_factory):
    return write_ag_news(tmp_path_factory.mktemp("ag_news"), n_train=320, n_test=80)


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE", str(tmp_path / "cache"))


def hf_config(tmp_path, root, bert, dataset="ag_news", **sections):
    cfg = {"name": "hf", "seed": 1,
           "data": {"name": dataset, "root": str(root), "batch_size": 16, "val_split": 64,
                    "text": {"max_len": 48, "bucket": True}},
           "model": {"name": f"hf:{bert}", "pretrained": "hf"},
           "optim": {"name": "adamw", "lr": 0.003},
           "schedule": {"name": "linear", "warmup_epochs": 0.5},
           "trainer": {"epochs": 6},
           "log": {"dir": str(tmp_path / "runs"), "progress": "none", "tensorboard": False}}
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def test_fine_tune_then_test_predict_and_an_onnx_export_that_predicts_the_same(tmp_path, bert, news_root, capsys):
    assert main(["train", str(write_config(tmp_path, hf_config(tmp_path, news_root, bert)))]) == 0
    err = capsys.readouterr().err
    assert "0 adapted, 2 newly initialised, 0 ignored" in err and "model.classifier.weight" in err
    run = only_run(tmp_path / "runs")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["text"]["tokenizer"] == "model"  # auto, resolved and recorded
    assert (run / "tokenizer" / "tokenizer.json").is_file() and not (run / "vocab.json").exists()
    assert json.loads((run / "test_metrics.json").read_text())["acc"] > 0.45  # chance is 0.25

    assert main(["test", str(run)]) == 0
    assert "cache hit" in capsys.readouterr().err  # the model tokenizer's ids are cached too
    texts = ["The minister signed the treaty at the embassy", "Investors cheered the merger as shares rose"]
    assert main(["predict", str(run), *texts]) == 0
    from_run = capsys.readouterr().out.strip().splitlines()

    import shutil

    moved = bert.with_name(bert.name + "-moved")
    shutil.move(bert, moved)  # the run keeps the model's config.json beside its tokenizer: it needs neither again
    try:
        assert main(["export", str(run), "--format", "onnx"]) == 0
    finally:
        shutil.move(moved, bert)
    import onnxruntime

    inputs = onnxruntime.InferenceSession(str(run / "model.onnx")).get_inputs()
    assert [i.name for i in inputs] == ["input_ids", "attention_mask"]
    assert all(isinstance(d, str) for i in inputs for d in i.shape)  # dynamic batch and length
    meta = json.loads((run / "model.onnx.json").read_text())
    assert meta["parity_max_abs_diff"] < 1e-4 and meta["input"]["layout"] == "masked"
    capsys.readouterr()
    assert main(["predict", str(run / "model.onnx"), *texts]) == 0
    from_onnx = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in from_onnx] == [line.split()[:2] for line in from_run]


def test_pretrained_backbone_is_the_source_model_and_padding_is_masked(bert):
    from transformers import BertModel

    info = DataInfo("t", "text", 3, list("abc"), vocab_size=100, pad_id=0)
    model = prepare_model(ModelConfig(name=f"hf:{bert}", pretrained="hf"), info, CPU, False, pretrained=True).eval()
    source = BertModel.from_pretrained(bert).state_dict()
    own = model.state_dict()
    assert all(torch.equal(own[f"model.bert.{k}"], v) for k, v in source.items())
    assert own["model.classifier.weight"].shape == (3, 32)

    seqs = [torch.randint(5, 100, (n,)) for n in (7, 3, 12)]
    with torch.no_grad():
        short = model(pad_collate(seqs, 0))
        longer = model(pad_collate([*seqs, torch.randint(5, 100, (30,))], 0))[:3]  # 18 more padding columns
    assert torch.allclose(short, longer, atol=1e-5), (short - longer).abs().max()


@pytest.mark.parametrize("task, write, column", [("multilabel", write_multilabel_text_csv, "labels"),
                                                 ("regression", write_regression_text_csv, "stars")])
def test_multilabel_and_regression_fine_tune(tmp_path, bert, task, write, column, capsys):
    root = write(tmp_path / "texts", n_train=240, n_test=48)
    cfg = hf_config(tmp_path, root, bert, dataset="text_csv", task={"name": task}, trainer={"epochs": 4},
                    data={"text": {"label_column": column, "max_len": 32}})
    assert main(["train", str(write_config(tmp_path, cfg))]) == 0
    run = only_run(tmp_path / "runs")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    capsys.readouterr()
    assert main(["predict", str(run), "great great great bad bad the report"]) == 0
    assert capsys.readouterr().out.strip()


def test_mid_epoch_resume_is_bit_exact(tmp_path, bert, news_root):
    from test_resume import _assert_same_state

    def cfg(folder):
        return build_config(hf_config(tmp_path, news_root, bert, trainer={"epochs": 2, "accumulate": 2},
                                      log={"dir": str(tmp_path / folder)}))

    full = session.train(cfg("full"), quiet=True)

    def stop(trainer):
        if trainer.state.step == 11:  # epoch 2 of 8 optimizer steps each
            trainer.stop_requested = True

    with pytest.raises(TrainingInterrupted):
        session.train(cfg("cut"), quiet=True, callbacks=[LambdaCallback(on_step_end=stop)])
    resumed = session.train(cfg("cut"), resume=only_run(tmp_path / "cut"), quiet=True)
    _assert_same_state(load_checkpoint(full.run_dir / "checkpoints" / "last.pt"),
                       load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt"))


@pytest.mark.parametrize("change, message", [
    ({"data": {"text": {"max_len": 100}}}, "longer than the 64 tokens"),
    ({"model": {"name": "hf:/no/such/folder"}}, "no such folder"),
    ({"model": {"name": "hf:some-org/not-downloaded"}}, "hf download some-org/not-downloaded"),
    ({"data": {"text": {"tokenizer": "basic_english"}}}, "data.text.tokenizer=model"),
    ({"data": {"text": {"ngrams": 2}}}, "ngrams shape kiln's own vocabulary"),
    ({"model": {"pretrained": "timm"}}, "needs a timm:NAME model"),
    ({"model": {"args": {"hidden_dropout": 0.2}}}, "did you mean hidden_dropout_prob"),
])
def test_mistakes_are_refused_before_training(tmp_path, bert, news_root, capsys, change, message):
    cfg = hf_config(tmp_path, news_root, bert)
    for section, values in change.items():
        merged = {**cfg[section], **values}
        if "text" in values:
            merged["text"] = {**cfg[section]["text"], **values["text"]}
        cfg[section] = merged
    assert main(["train", str(write_config(tmp_path, cfg))]) == 2
    assert message in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("*/*/checkpoints/*.pt"))
