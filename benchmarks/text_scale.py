"""Text at scale: how fast kiln reads and tokenizes a large CSV into training batches, and how much memory it
holds, with kiln's own tokenizer and vocabulary and with a fast (Rust) Hugging Face tokenizer.

For each size a generated `text,label` CSV of 30-word rows (four topics, a vocabulary of ~2,000 words) is built
into kiln's training split (`build_data` of a text_csv config: read, tokenize, cache, vocabulary, encode) in a
fresh process with an empty token cache; then again from the cache. Peak RSS is the child's (torch's own ~0.3 GB
included; the baseline row says how much). Rows/s counts the whole build, not the tokenizer alone.

    python benchmarks/text_scale.py [--rows 100000 1000000 10000000] [--format csv|parquet] [--only kiln|fast]
                                    [--dir /tmp/kiln-text-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

WORDS_PER_ROW = 30


def vocabulary(n: int = 2000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n)})


def generated(rows: int, seed: int = 0):
    """Rows of 30 words, 100,000 at a time: each topic's own words mixed with common ones; the label is the topic.
    Yields (texts, labels)."""
    import numpy as np

    words = np.array(vocabulary(), dtype=object)
    rng = np.random.default_rng(seed)
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        labels = rng.integers(0, 4, n)
        picks = rng.integers(0, len(words) // 2, (n, WORDS_PER_ROW))  # common words
        topical = rng.random((n, WORDS_PER_ROW)) < 0.2
        picks = np.where(topical, len(words) // 2 + labels[:, None] * (len(words) // 8)
                         + picks % (len(words) // 8), picks)
        yield [" ".join(row) for row in words[picks]], [f"topic{label}" for label in labels]


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label\n")
        for texts, labels in generated(rows, seed):
            f.writelines(f"{text},{label}\n" for text, label in zip(texts, labels))


def write_parquet(path: Path, rows: int, seed: int = 0) -> None:
    """The same rows as a Parquet file (row groups of 100,000), as `datasets` or pandas would write them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("text", pa.string()), ("label", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for texts, labels in generated(rows, seed):
            writer.write_table(pa.table({"text": texts, "label": labels}, schema=schema))


def write_tokenizer(folder: Path) -> None:
    """A BERT-style WordPiece tokenizer (fast, Rust) trained on the benchmark's vocabulary, large enough that each
    word is one token, as most words of real text are for a pretrained model's tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(vocabulary(), trainers.WordPieceTrainer(vocab_size=8000, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(folder)


def child(root: str, tokenizer: str, cache: str, source: str = "text_csv") -> None:
    """In a fresh process: build the training split, print seconds, rows and peak RSS as JSON."""
    import resource

    import torch

    from kiln.config import DataConfig, TextConfig
    from kiln.data import DataRequest, build_data
    from kiln.data.model_tokenizer import ModelTokenizer

    os.environ["KILN_CACHE"] = cache
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = tokenizer != "basic_english"
    text = TextConfig(tokenizer="model" if model else "basic_english", max_len=64)
    cfg = DataConfig(name=source, root=Path(root), val_split=0.0, batch_size=256, text=text)
    start = time.perf_counter()
    data = build_data(cfg, DataRequest(task="multiclass", seed=0, device=torch.device("cpu"), splits=("train",),
                                       vocab=ModelTokenizer(Path(tokenizer)) if model else None))
    seconds = time.perf_counter() - start
    batch, _ = next(iter(data.require("train").epoch(0)))
    assert batch.ids.shape[0] == 256
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rows": data.sizes["train"], "peak_gb": peak / 2**20,
                      "import_gb": before / 2**20, "vocab": data.info.vocab_size}))


def measure(root: Path, tokenizer: str, cache: Path, source: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(root), tokenizer, str(cache), source],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/kiln-text-scale"))
    parser.add_argument("--only", choices=["kiln", "fast"], help="one tokenizer only")
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv",
                        help="the file format: a text_csv CSV, or a Parquet file read by data.name: hf_dataset")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    tokenizer = args.dir / "wordpiece"
    if not (tokenizer / "tokenizer.json").is_file():
        write_tokenizer(tokenizer)
    print(f"| rows | {args.format} | tokenizer | build, cold | rows/s | peak RSS | from the cache | peak RSS |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for rows in args.rows:
        root = args.dir / f"rows-{rows}" if args.format == "csv" else args.dir / f"parquet-{rows}"
        train, source = (root / "train.csv", "text_csv") if args.format == "csv" else \
            (root / "train-00000-of-00001.parquet", "hf_dataset")
        if not train.is_file():  # the folder needs a test file; only the training split is built
            (write_csv if args.format == "csv" else write_parquet)(
                root / ("test.csv" if args.format == "csv" else "test-00000-of-00001.parquet"), 1000, seed=1)
            (write_csv if args.format == "csv" else write_parquet)(train, rows)
        size = train.stat().st_size / 2**20
        for name, which in (("kiln basic_english", "basic_english"), ("WordPiece (fast)", str(tokenizer))):
            if args.only and (args.only == "kiln") != (which == "basic_english"):
                continue
            cache = args.dir / f"cache-{args.format}-{rows}-{which == 'basic_english'}"
            subprocess.run(["rm", "-rf", str(cache)], check=True)
            cold, warm = measure(root, which, cache, source), measure(root, which, cache, source)
            print(f"| {rows:,} | {size:,.0f} MB | {name} | {cold['seconds']:.1f} s | "
                  f"{rows / cold['seconds']:,.0f} | {cold['peak_gb']:.2f} GB | {warm['seconds']:.1f} s | "
                  f"{warm['peak_gb']:.2f} GB |", flush=True)
    print(f"\n(the processes' RSS after importing torch and kiln: {cold['import_gb']:.2f} GB)")


if __name__ == "__main__":
    main()
