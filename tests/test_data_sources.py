"""Data where people keep it: Hugging Face datasets and Parquet files, WebDataset shards (written by kiln data
pack), and the same shards and Parquet files in an object store — a real S3 API (moto's server) on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_resumes_bit_exact, only_run, write_config
from fakedata import SHAPE_CLASSES, shape_split, write_hf_dataset, write_parquet_images
from kiln.config import build_config
from kiln.data import DataRequest, build_data
from kiln.data.loaders import GroupedEpochSampler

CPU = torch.device("cpu")
N_TRAIN, N_TEST = 96, 32


@pytest.fixture(scope="module")
def hf_root(tmp_path_factory) -> Path:
    return write_hf_dataset(tmp_path_factory.mktemp("hf") / "saved", N_TRAIN, N_TEST)


@pytest.fixture(scope="module")
def packed(tmp_path_factory, hf_root):
    from kiln.commands.pack import pack

    return pack(hf_root, tmp_path_factory.mktemp("shards") / "shapes", shard_size="20KB")


def source_config(tmp_path: Path, data: dict, **trainer) -> dict:
    return {"name": "src", "seed": 2,
            "data": {"batch_size": 16, "image_size": 24, "val_split": 16, **data},
            "model": {"name": "cnn", "args": {"channels": [8, 16]}},
            "optim": {"name": "adamw", "lr": 0.01},
            "trainer": {"epochs": 2, **trainer},
            "log": {"dir": str(tmp_path / "runs"), "progress": "none", "tensorboard": False}}


def shard_urls(packed) -> dict[str, str]:
    return packed.urls()


# -- Hugging Face datasets and Parquet ---------------------------------------------------------------------------

def test_a_saved_hf_dataset_trains_tests_and_predicts_with_its_classlabel_names(tmp_path, hf_root, own_cache, cli):
    path = write_config(tmp_path, source_config(tmp_path, {"name": "hf_dataset", "root": str(hf_root)}))
    ran = cli("train", path)
    assert ran.returncode == 0, ran.stderr
    run = only_run(tmp_path / "runs")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["class_names"] == SHAPE_CLASSES  # the ClassLabel feature's names, in its order
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["num_samples"] == N_TEST and metrics["class_names"] == SHAPE_CLASSES
    assert cli("test", run).returncode == 0
    images, _ = shape_split(1, seed=9)
    images[0].save(tmp_path / "one.png")
    predicted = cli("predict", run, tmp_path / "one.png")
    assert predicted.returncode == 0, predicted.stderr
    assert any(name in predicted.stdout for name in SHAPE_CLASSES)


def test_plain_parquet_files_of_image_bytes_by_split_name_and_by_data_files(tmp_path, own_cache):
    root = write_parquet_images(tmp_path / "pq", N_TRAIN, N_TEST)
    by_folder = build_config(source_config(tmp_path, {"name": "hf_dataset", "root": str(root), "image_column": "png",
                                                      "label_column": "kind"}))
    data = build_data(by_folder.data, DataRequest(seed=0, device=CPU))
    assert data.sizes == {"train": N_TRAIN - 16, "val": 16, "test": N_TEST}
    assert data.info.class_names == sorted(SHAPE_CLASSES)  # from the label cells: no ClassLabel to name them
    x, y = next(iter(data.train.epoch(1)))
    assert x.shape == (16, 3, 24, 24) and y.dtype == torch.long
    by_files = by_folder.data.model_copy(update={"root": None, "files": {"train": str(root / "train-*.parquet"),
                                                                         "test": str(root / "test.parquet")}})
    assert build_data(by_files, DataRequest(seed=0, device=CPU)).sizes == data.sizes


def test_a_parquet_file_without_the_named_column_is_refused_naming_it_and_its_columns(tmp_path, cli):
    root = write_parquet_images(tmp_path / "pq", 8, 4)
    path = write_config(tmp_path, source_config(tmp_path, {"name": "hf_dataset", "root": str(root)}))
    ran = cli("train", path, "data.image_column=png")
    assert ran.returncode == 2
    assert "has no column 'label'" in ran.stderr and "png, kind" in ran.stderr and "data.label_column" in ran.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.pt"))


def test_an_hf_name_that_is_neither_a_folder_nor_cached_says_how_to_fetch_it(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    path = write_config(tmp_path, source_config(tmp_path, {"name": "hf_dataset", "root": "someone/no-such-dataset"}))
    ran = cli("train", path)
    assert ran.returncode == 2 and "data.download=true" in ran.stderr and "someone/no-such-dataset" in ran.stderr


# -- WebDataset shards -------------------------------------------------------------------------------------------

def test_kiln_data_pack_writes_every_sample_once_with_its_class(tmp_path, hf_root, cli):
    ran = cli("data", "pack", hf_root, tmp_path / "out", "--shard-size", "20KB")
    assert ran.returncode == 0, ran.stderr
    assert f"train: {N_TRAIN} samples" in ran.stdout
    from kiln.config.files import parse_overrides
    from kiln.core.storage import expand

    printed = next(part for part in ran.stdout.split("'") if part.startswith("data.urls="))
    urls = parse_overrides([printed])["data"]["urls"]  # the override it prints reads back as the shards
    assert sorted(Path(p).name for p in expand(urls["train"])) == \
        sorted(p.name for p in (tmp_path / "out").glob("train-*.tar"))
    shards = sorted((tmp_path / "out").glob("train-*.tar"))
    assert len(shards) > 2  # 20 KB shards of ~1.5 KB PNGs
    classes = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            assert len(names) == 2 * len({n.split(".")[0] for n in names})  # an image and a .cls per key
            classes += [int(tar.extractfile(n).read()) for n in names if n.endswith(".cls")]
    assert sorted(classes) == sorted(i % 4 for i in range(N_TRAIN))
    assert (tmp_path / "out" / "classes.txt").read_text().split() == SHAPE_CLASSES
    again = cli("data", "pack", hf_root, tmp_path / "out")
    assert again.returncode == 2 and "already holds shards" in again.stderr  # nothing written over


def test_shards_train_and_test_and_their_index_is_cached(tmp_path, packed, own_cache, cli):
    path = write_config(tmp_path, source_config(tmp_path, {"name": "webdataset", "urls": shard_urls(packed)}))
    ran = cli("train", path)
    assert ran.returncode == 0, ran.stderr
    run = only_run(tmp_path / "runs")
    assert json.loads((run / "test_metrics.json").read_text())["num_samples"] == N_TEST
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["class_names"] == SHAPE_CLASSES  # classes.txt
    indexed = sorted((own_cache / "shards").glob("*.json"))
    assert len(indexed) == sum(len(files) for files in packed.shards.values())
    before = [p.stat().st_mtime_ns for p in indexed]
    assert cli("test", run).returncode == 0
    assert [p.stat().st_mtime_ns for p in indexed] == before  # read back, not written again
    own = (run / "test_metrics.json").read_bytes()
    other = {"train": shard_urls(packed)["train"], "test": shard_urls(packed)["train"]}  # other test shards
    assert cli("test", run, f"data.urls={json.dumps(other)}").returncode == 0
    assert (run / "test_metrics.json").read_bytes() == own  # the run's own results untouched
    assert len(list(run.glob("test_metrics-*.json"))) == 1


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12), world=st.integers(1, 4),
       buffer=st.integers(1, 50), epoch=st.integers(0, 3))
def test_the_shard_order_gives_each_rank_its_own_shards_and_every_sample_once(sizes, world, buffer, epoch):
    groups = torch.cat([torch.full((n,), g) for g, n in enumerate(sizes)])
    n = len(groups)
    orders = [GroupedEpochSampler(groups, 4, buffer=buffer, seed=7, rank=r, world_size=world).order(epoch)
              for r in range(world)]
    assert len({len(o) for o in orders}) == 1 and len(orders[0]) == n // world  # equal counts: no rank waits
    seen = torch.cat(orders)
    assert len(seen.unique()) == len(seen) == n - n % world  # every sample once, at most world - 1 left out
    again = GroupedEpochSampler(groups, 4, buffer=buffer, seed=7, rank=0, world_size=world).order(epoch)
    assert torch.equal(again, orders[0])  # a pure function of (seed, epoch, rank): resume needs no state
    if world > 1 and len(sizes) >= 2 * world:
        shared = set.intersection(*({int(g) for g in groups[o]} for o in orders[:2]))
        assert len(shared) <= 2  # only the shards evened out between ranks are read by two of them


def test_the_shuffle_buffer_mixes_within_its_reach_and_changes_each_epoch():
    groups = torch.arange(400) // 100  # four shards of 100
    sampler = GroupedEpochSampler(groups, 8, buffer=50, seed=1)
    first, second = sampler.order(0), sampler.order(1)
    assert sorted(first.tolist()) == list(range(400)) and not torch.equal(first, second)
    moved = (first - torch.arange(400)).abs().float().mean()
    assert moved > 5  # shuffled, not the shards' order


def test_two_ranks_over_shards_read_disjoint_samples_covering_the_training_split(tmp_path, packed, own_cache):
    cfg = build_config(source_config(tmp_path, {"name": "webdataset", "urls": shard_urls(packed), "val_split": 0,
                                                "cache": "off"}))
    seen = []
    for rank in (0, 1):
        data = build_data(cfg.data, DataRequest(seed=3, device=CPU, splits=("train",), rank=rank, world_size=2))
        sampler = data.train.sampler
        assert isinstance(sampler, GroupedEpochSampler)
        labels = torch.cat([y for _, y in data.train.epoch(1)])
        assert len(labels) == len(data.train) * 16
        seen.append(sampler.order(1))
    assert len(set(seen[0].tolist()) | set(seen[1].tolist())) == N_TRAIN
    assert not set(seen[0].tolist()) & set(seen[1].tolist())


def test_training_on_shards_resumes_bit_exact_mid_epoch(tmp_path, packed, own_cache):
    def config_for(folder: str):
        cfg = source_config(tmp_path / folder, {"name": "webdataset", "urls": shard_urls(packed), "cache": "off",
                                                "shuffle_buffer": 8, "augment": {"hflip": True}})
        return build_config(cfg)

    assert_resumes_bit_exact(config_for, stop_at=7)  # 5 steps per epoch: in the middle of the second


def write_shard(path: Path, samples: list[dict]) -> Path:
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return path


def png_bytes(label: int = 0) -> bytes:
    images, _ = shape_split(label + 1, seed=label)
    out = io.BytesIO()
    images[-1].save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("case", ["truncated", "no target", "undecodable", "no such shard", "empty glob"])
def test_bad_shards_stop_before_training_naming_the_shard_and_key(tmp_path, packed, own_cache, cli, case):
    folder = tmp_path / "bad"
    folder.mkdir()
    good = [{"__key__": f"{i:04d}", "png": png_bytes(i % 4), "cls": str(i % 4).encode()} for i in range(40)]
    shard = write_shard(folder / "train-0.tar", good)
    urls, expect = str(shard), ""
    if case == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        expect = "train-0.tar is truncated"
    elif case == "no target":
        write_shard(shard, [*good, {"__key__": "lonely", "png": png_bytes()}])
        expect = "train-0.tar, sample 'lonely': no target"
    elif case == "undecodable":
        write_shard(shard, [*good, {"__key__": "broken", "png": b"not a png", "cls": b"1"}])
        expect = "train-0.tar:broken.png"
    elif case == "no such shard":
        urls, expect = str(folder / "train-{0..2}.tar"), "2 of the 3 shards"
    else:
        urls, expect = str(folder / "nothing-*.tar"), "matches no shard"
    cfg = source_config(tmp_path, {"name": "webdataset", "urls": urls, "class_names": SHAPE_CLASSES})
    ran = cli("train", write_config(tmp_path, cfg))
    assert ran.returncode == 2, ran.stderr
    assert expect in ran.stderr
    assert not list((tmp_path / "runs").rglob("*.pt"))
    if case in ("truncated", "no target", "undecodable"):  # or counted and left out
        skipped = cli("train", write_config(tmp_path, cfg), "data.on_bad_row=skip", "trainer.epochs=1")
        assert skipped.returncode == 0, skipped.stderr
        assert "skip" in skipped.stderr or "using the" in skipped.stderr


# -- an object store: moto's S3 server on 127.0.0.1 --------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server._server.server_port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """Credentials and endpoint as a user sets them; a bucket holding the packed shards and Parquet files."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if not fs.exists("kiln-data"):
        fs.mkdir("kiln-data")
    return fs


def test_shards_and_parquet_files_train_from_an_s3_bucket(tmp_path, packed, s3, own_cache, cli):
    s3.put(str(packed.dest) + "/", "kiln-data/shapes/", recursive=True)
    urls = {split: "s3://kiln-data/shapes/" + Path(pattern).name for split, pattern in shard_urls(packed).items()}
    path = write_config(tmp_path, source_config(tmp_path, {"name": "webdataset", "urls": urls, "cache": "off"},
                                                epochs=1))
    ran = cli("train", path)
    assert ran.returncode == 0, ran.stderr
    run = only_run(tmp_path / "runs")
    assert json.loads((run / "test_metrics.json").read_text())["num_samples"] == N_TEST
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["class_names"] == SHAPE_CLASSES

    root = write_parquet_images(tmp_path / "pq", 40, 8)
    s3.put(str(root) + "/", "kiln-data/pq/", recursive=True)
    cfg = build_config(source_config(tmp_path, {"name": "hf_dataset", "image_column": "png", "label_column": "kind",
                                                "files": {"train": "s3://kiln-data/pq/train-*.parquet",
                                                          "test": "s3://kiln-data/pq/test.parquet"}}))
    assert build_data(cfg.data, DataRequest(seed=0, device=CPU)).sizes == {"train": 24, "val": 16, "test": 8}


def test_image_and_text_csvs_train_from_an_s3_bucket(tmp_path, s3, own_cache, cli):
    from fakedata import write_image_csv, write_multilabel_text_csv

    pets = write_image_csv(tmp_path / "pets", n=64)
    s3.put(str(pets) + "/", "kiln-data/pets/", recursive=True)
    files = {"train": "s3://kiln-data/pets/train.csv", "test": "s3://kiln-data/pets/test.csv"}
    path = write_config(tmp_path, source_config(tmp_path, {"name": "image_csv", "files": files}, epochs=1))
    ran = cli("train", path)
    assert ran.returncode == 0, ran.stderr
    run = only_run(tmp_path / "runs")
    assert json.loads((run / "test_metrics.json").read_text())["num_samples"] == 64 // 3

    news = write_multilabel_text_csv(tmp_path / "news", n_train=60, n_test=20)
    s3.put(str(news) + "/", "kiln-data/news/", recursive=True)
    cfg = build_config({"task": {"name": "multilabel"},
                        "data": {"name": "text_csv", "val_split": 10, "text": {"label_column": "labels"},
                                 "files": {"train": "s3://kiln-data/news/train.csv",
                                           "test": "s3://kiln-data/news/test.csv"}}})
    data = build_data(cfg.data, DataRequest(seed=0, device=CPU, task="multilabel"))
    assert data.sizes == {"train": 50, "val": 10, "test": 20} and data.info.kind == "text"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["missing bucket", "missing key", "no credentials", "unreachable"])
def test_object_store_failures_stop_before_training_naming_the_url_and_what_to_set(tmp_path, s3, monkeypatch,
                                                                                    cli, case):
    url = "s3://kiln-data/nothing/train-{0..1}.tar"
    expect = "do not exist"
    if case == "missing bucket":
        url, expect = "s3://no-such-bucket/train-*.tar", "no such file or bucket"
    elif case == "no credentials":
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(key)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        expect = "AWS_ACCESS_KEY_ID"
    elif case == "unreachable":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        expect = "cannot reach the storage"
    cfg = source_config(tmp_path, {"name": "webdataset", "urls": url, "class_names": SHAPE_CLASSES})
    ran = cli("train", write_config(tmp_path, cfg))
    assert ran.returncode == 2, ran.stderr
    assert expect in ran.stderr and ("s3://" in ran.stderr)
    assert not list((tmp_path / "runs").rglob("*.pt"))
    assert "Traceback" not in ran.stderr
    assert os.environ.get("AWS_DEFAULT_REGION") == "us-east-1"


# -- text from tables, and the word-level tokenizers over Arrow ------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.one_of(st.text(max_size=40), st.text(alphabet=st.characters(max_codepoint=127), max_size=40),
                                st.sampled_from(["Don't stop", "rock'n'roll 'quoted'", "a\\nb", "x\x1cy", "café—naïve",
                                                 "\uff21\uff22\u3000\uff44", "tab\tsep\u00a0nbsp"])),
                      min_size=1, max_size=6),
       tokenizer=st.sampled_from(["basic_english", "whitespace"]), ngrams=st.integers(1, 3))
def test_the_column_tokenizer_splits_every_text_as_the_one_text_tokenizer_does(texts, tokenizer, ngrams):
    """Training tokenizes whole Arrow columns, kiln predict one text at a time: they must agree on any text."""
    from kiln.config import TextConfig
    from kiln.data.arrow_tokens import tokenize_texts
    from kiln.data.vocab import tokenize

    cfg = TextConfig(tokenizer=tokenizer, ngrams=ngrams)
    assert tokenize_texts(texts, cfg) == [tokenize(t, cfg) for t in texts]


def write_text_dataset(root: Path, rows: int = 240) -> Path:
    import datasets

    from fakedata import make_news

    news = make_news(rows, 0)
    names = ["World", "Sports", "Business", "Sci/Tech"]
    features = datasets.Features({"title": datasets.Value("string"), "body": datasets.Value("string"),
                                  "topic": datasets.ClassLabel(names=names)})

    def split(part):
        return datasets.Dataset.from_dict({"title": [r[1] for r in part], "body": [r[2] for r in part],
                                           "topic": [r[0] - 1 for r in part]}, features=features)

    datasets.DatasetDict({"train": split(news[:rows - 60]), "validation": split(news[rows - 60:rows - 30]),
                          "test": split(news[rows - 30:])}).save_to_disk(str(root))
    return root


def test_text_columns_of_a_saved_dataset_train_with_its_own_splits_and_class_names(tmp_path, own_cache, cli):
    root = write_text_dataset(tmp_path / "news")
    cfg = {"name": "news", "seed": 1,
           "data": {"name": "hf_dataset", "root": str(root), "batch_size": 16,
                    "text": {"text_columns": ["title", "body"], "label_column": "topic"}},
           "model": {"name": "embedding_bag"}, "optim": {"name": "adamw", "lr": 0.05},
           "trainer": {"epochs": 6}, "log": {"dir": str(tmp_path / "runs"), "progress": "none"}}
    ran = cli("train", write_config(tmp_path, cfg))
    assert ran.returncode == 0, ran.stderr
    run = only_run(tmp_path / "runs")
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["num_samples"] == 30 and metrics["class_names"] == ["World", "Sports", "Business", "Sci/Tech"]
    assert metrics["acc"] > 0.5  # four topics told apart by their words (a trivial predictor: 0.25)
    predicted = cli("predict", run, "the team won the football match")
    assert predicted.returncode == 0 and "Sports" in predicted.stdout


def test_a_parquet_text_row_without_a_label_stops_with_its_row_or_is_skipped(tmp_path, own_cache):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "pq"
    root.mkdir()
    labels = ["a", "b"] * 20
    labels[7] = None
    pq.write_table(pa.table({"text": [f"word{i % 2} filler" for i in range(40)], "label": labels}),
                   root / "train.parquet")
    cfg = build_config({"data": {"name": "hf_dataset", "root": str(root), "val_split": 8, "batch_size": 8,
                                 "text": {"text_columns": ["text"]}}})
    from kiln.core.errors import KilnError

    with pytest.raises(KilnError, match=r"train.parquet, row 7: empty label"):
        build_data(cfg.data, DataRequest(seed=0, device=CPU, splits=("train",)))
    skip = cfg.data.model_copy(update={"on_bad_row": "skip", "text": cfg.data.text.model_copy(
        update={"on_bad_row": "skip"})})
    data = build_data(skip, DataRequest(seed=0, device=CPU, splits=("train", "val")))
    assert data.sizes == {"train": 31, "val": 8} and data.info.class_names == ["a", "b"]


# -- run folders mirrored to the store (log.remote) ----------------------------------------------------------------

def test_a_run_mirrored_to_s3_resumes_on_a_fresh_machine_bit_exact(tmp_path, idx_root, s3, cli):
    import shutil

    from conftest import tiny_config
    from kiln.core.errors import TrainingInterrupted
    from kiln.core.mirror import read_manifest, sha256
    from kiln.core.state import load_checkpoint
    from kiln.train import session
    from kiln.train.callbacks import LambdaCallback

    def config(folder: str, remote: str | None) -> dict:
        return tiny_config(tmp_path, idx_root, log={"dir": str(tmp_path / folder), "progress": "none",
                                                     "remote": remote})

    full = session.train(build_config(config("full", None)), quiet=True)

    def stop(t):
        if t.state.step == 7:  # in the middle of the first epoch (12 steps each)
            t.stop_requested = True

    remote = "s3://kiln-data/runs"
    with pytest.raises(TrainingInterrupted):
        session.train(build_config(config("machine1", remote)), quiet=True,
                      callbacks=[LambdaCallback(on_step_end=stop)])
    stamp = only_run(tmp_path / "machine1").name
    stored = read_manifest(f"{remote}/tiny/{stamp}")
    assert {"config.yaml", "status.json", "checkpoints/last.pt", "train.log"} <= set(stored)
    assert json.loads(s3.cat_file(f"kiln-data/runs/tiny/{stamp}/status.json"))["state"] == "interrupted"

    shutil.rmtree(tmp_path / "machine1")  # a fresh machine: only the config and the store
    path = write_config(tmp_path, config("machine1", remote))
    resumed = cli("train", path, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "fetched the unfinished run" in resumed.stderr and "resumed from" in resumed.stderr
    run = only_run(tmp_path / "machine1")
    assert run.name == stamp  # the same run, continued
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    final = read_manifest(f"{remote}/tiny/{stamp}")
    assert set(stored) <= set(final) and "test_metrics.json" in final  # nothing published was deleted
    assert final["checkpoints/last.pt"]["sha256"] == sha256(run / "checkpoints" / "last.pt")
    assert not [k for k in s3.find("kiln-data/runs") if ".part-" in k]


def test_the_mirror_survives_a_kill_between_upload_and_publish(tmp_path, s3):
    from kiln.core.mirror import Mirror, read_manifest, sha256
    from kiln.core.storage import filesystem
    from kiln.runs.remote import _whole_checkpoint

    folder, url = tmp_path / "run", "s3://kiln-data/mirror-test"
    (folder / "checkpoints").mkdir(parents=True)
    last = folder / "checkpoints" / "last.pt"
    torch.save({"step": 1}, last)
    (folder / "metrics.jsonl").write_text('{"epoch": 1}\n')
    first = sha256(last)
    assert Mirror(folder, url).push() == ["checkpoints/last.pt", "metrics.jsonl"]

    class Killed(BaseException):
        pass

    def killed(*args, **kwargs):
        raise Killed

    torch.save({"step": 2}, last)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        patch.setattr(filesystem(url), "copy", killed)  # uploaded under its temporary key, never published
        Mirror(folder, url).push()
    assert [k for k in s3.find("kiln-data/mirror-test") if ".part-" in k]  # what the killed push left
    fresh = tmp_path / "fresh"
    assert Mirror(fresh, url).pull(trust=_whole_checkpoint) == []
    assert sha256(fresh / "checkpoints" / "last.pt") == first  # the version before the kill, intact

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        patch.setattr(Mirror, "_write_manifest", killed)  # published, but killed before the manifest
        Mirror(folder, url).push()
    assert not [k for k in s3.find("kiln-data/mirror-test") if ".part-" in k]  # the next push cleared them
    assert read_manifest(url)["checkpoints/last.pt"]["sha256"] == first
    newer = tmp_path / "newer"
    assert Mirror(newer, url).pull(trust=_whole_checkpoint) == []  # newer than its entry, but a whole archive
    assert torch.load(newer / "checkpoints" / "last.pt")["step"] == 2
    s3.pipe_file("kiln-data/mirror-test/checkpoints/last.pt", b"PK\x03\x04 cut short")
    damaged = tmp_path / "damaged"
    assert Mirror(damaged, url).pull(trust=_whole_checkpoint) == ["checkpoints/last.pt"]
    assert not (damaged / "checkpoints" / "last.pt").exists()


def test_a_remote_that_cannot_be_written_stops_the_run_before_training(tmp_path, idx_root, s3, cli):
    from conftest import tiny_config

    cfg = tiny_config(tmp_path, idx_root, log={"dir": str(tmp_path / "runs"), "progress": "none",
                                               "remote": "s3://no-such-bucket/runs"})
    ran = cli("train", write_config(tmp_path, cfg))
    assert ran.returncode == 2 and "s3://no-such-bucket/runs" in ran.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_sigkills_while_training_on_shards_then_resume_end_bit_identical(tmp_path, own_cache):
    """benchmarks/kill_resume.py on WebDataset shards read per batch: SIGKILLs mid-epoch, resumed each time."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from kill_resume import chain

    result = chain(tmp_path, kills=2, seed=3, train=320, epochs=3, source="shards")
    assert result["kills"] >= 2 and result["identical"], result


@pytest.mark.slow
def test_two_processes_train_on_shards_and_score_the_whole_test_split(tmp_path, packed, own_cache):
    from conftest import run_cli

    path = write_config(tmp_path, source_config(tmp_path, {"name": "webdataset", "urls": shard_urls(packed),
                                                           "cache": "off"}, epochs=1))
    result = run_cli("train", path, "--nproc", "2", env={"KILN_CACHE": str(own_cache)})
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path / "runs")
    assert json.loads((run / "status.json").read_text())["world_size"] == 2
    assert json.loads((run / "test_metrics.json").read_text())["num_samples"] == N_TEST  # gathered from both ranks
