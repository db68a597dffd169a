"""Text classification data: CSV files (AG News layout or any headed CSV), tokenizer, vocabulary,
a tokenization cache, and padding / offsets batches.

The vocabulary is built from the training split only and saved in the run folder (vocab.json), so
`kiln test` and `kiln predict` encode text exactly as training did.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.utils.data import Dataset

from kiln.config import DataConfig, TextConfig
from kiln.data import Data, DataInfo, eval_batch_size, train_val_split
from kiln.data.loaders import Batches, BucketBatchSampler, EpochBatchSampler, LoaderBatches
from kiln.data.registry import CsvDataset, locate
from kiln.errors import KilnError

log = logging.getLogger("kiln")
PAD, UNK = "<pad>", "<unk>"


# --------------------------------------------------------------------------- reading rows

@dataclass
class Rows:
    texts: list[str]
    labels: list[str] | None  # raw label values as written; None when the file has no label column
    skipped: int = 0


def read_rows(path: Path, spec: CsvDataset, cfg: TextConfig, require_labels: bool = True) -> Rows:
    """Read one CSV file. Malformed rows raise (with file and line) or are skipped, per cfg.on_bad_row."""
    texts: list[str] = []
    labels: list[str] = []
    skipped, first_bad = 0, None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            text_idx, label_idx, width = _columns(reader, path, spec, cfg, require_labels)
            for row in reader:
                if not row:
                    continue
                problem = None if len(row) == width else f"expected {width} columns, found {len(row)}"
                if problem is None and label_idx is not None and not row[label_idx].strip():
                    problem = "empty label"
                if problem:
                    if cfg.on_bad_row == "error":
                        raise KilnError(f"{path}, line {reader.line_num}: malformed row ({problem}). Fix the row, "
                                        "or set data.text.on_bad_row=skip to skip such rows")
                    skipped += 1
                    first_bad = first_bad or f"line {reader.line_num}: {problem}"
                    continue
                texts.append(" ".join(row[i] for i in text_idx))
                if label_idx is not None:
                    labels.append(row[label_idx].strip())
    except UnicodeDecodeError as e:
        raise KilnError(f"{path} is not UTF-8 text ({e}); re-save it as UTF-8") from None
    except csv.Error as e:
        raise KilnError(f"{path} is not a valid CSV file: {e}") from None
    if skipped:
        log.warning("skipped %d malformed rows in %s (first: %s)", skipped, path, first_bad)
    return Rows(texts, labels if label_idx is not None else None, skipped)


def _columns(reader, path: Path, spec: CsvDataset, cfg: TextConfig, require_labels: bool):
    """(text column indices, label column index or None, expected row width)."""
    if not spec.header:  # AG News: "class index","title","description"
        return [1, 2], 0, 3
    header = next(reader, None)
    if header is None:
        raise KilnError(f"{path} is empty; a text_csv file starts with a header row")
    header = [h.strip() for h in header]
    missing = [c for c in cfg.text_columns if c not in header]
    if missing:
        raise KilnError(f"{path} has no column {', '.join(map(repr, missing))} (its header: {', '.join(header)}); "
                        "set data.text.text_columns")
    label_idx = header.index(cfg.label_column) if cfg.label_column in header else None
    if label_idx is None and require_labels:
        raise KilnError(f"{path} has no label column {cfg.label_column!r} (its header: {', '.join(header)}); "
                        "set data.text.label_column")
    return [header.index(c) for c in cfg.text_columns], label_idx, len(header)


def label_ids(rows: Rows, class_names: list[str], path: Path, cfg: TextConfig,
              one_based: bool) -> tuple[list[int], list[int]]:
    """Map raw labels (class names or integers) to 0-based class indices; bad labels per on_bad_row.
    Returns (labels, indices of the rows kept)."""
    assert rows.labels is not None, "training and test files are read with require_labels=True"
    index = {name: i for i, name in enumerate(class_names)}
    out, keep = [], []
    for i, raw in enumerate(rows.labels):
        label = index.get(raw)
        if label is None and re.fullmatch(r"-?\d+", raw):
            label = int(raw) - (1 if one_based else 0)
            label = label if 0 <= label < len(class_names) else None
        if label is None:
            if cfg.on_bad_row == "error":
                valid = f"1..{len(class_names)}" if one_based else ", ".join(class_names[:10])
                raise KilnError(f"{path}: row {i + 1} has label {raw!r}, which is not a class ({valid}). Fix it, or "
                                "set data.text.on_bad_row=skip")
            continue
        out.append(label)
        keep.append(i)
    if len(keep) != len(rows.labels):
        log.warning("skipped %d rows with unknown labels in %s", len(rows.labels) - len(keep), path)
    return out, keep


def infer_class_names(labels: list[str]) -> list[str]:
    """Integers 0..K-1 when every label is an integer, else the sorted distinct names."""
    distinct = sorted(set(labels))
    if distinct and all(re.fullmatch(r"\d+", x) for x in distinct):
        return [str(i) for i in range(max(int(x) for x in distinct) + 1)]
    return distinct


# --------------------------------------------------------------------------- tokens and vocabulary

_WORDS = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)


def tokenize(text: str, cfg: TextConfig) -> list[str]:
    """basic_english: lowercase, words and punctuation split apart; plus n-grams up to cfg.ngrams."""
    text = text.replace("\\n", " ").replace("\\", " ")  # AG News writes line breaks as literal backslashes
    tokens = _WORDS.findall(text.lower()) if cfg.tokenizer == "basic_english" else text.split()
    grams = list(tokens)
    for n in range(2, cfg.ngrams + 1):
        grams += [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return grams


class Vocab:
    """Token <-> id. Id 0 is <pad>, id 1 is <unk>; built from the training split only."""

    def __init__(self, itos: list[str]):
        assert itos[:2] == [PAD, UNK], itos[:2]
        self.itos = itos
        self.stoi = {t: i for i, t in enumerate(itos)}

    pad_id, unk_id = 0, 1

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, token_lists: Iterable[list[str]], min_freq: int = 1, max_size: int | None = None) -> "Vocab":
        counts = Counter(t for tokens in token_lists for t in tokens)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[:max_size - 2]
        return cls([PAD, UNK] + ranked)

    def encode(self, tokens: list[str], max_len: int | None = None) -> list[int]:
        ids = [self.stoi.get(t, self.unk_id) for t in tokens[:max_len]]
        return ids or [self.unk_id]  # an empty text still has one token, so lengths are >= 1

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"itos": self.itos}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        try:
            return cls(json.loads(Path(path).read_text())["itos"])
        except (OSError, ValueError, KeyError, AssertionError) as e:
            raise KilnError(f"cannot read the vocabulary {path}: {e}") from None


def cached_tokens(path: Path, spec: CsvDataset, cfg: TextConfig) -> tuple[list[list[str]], Rows]:
    """Tokenized rows of a CSV file, cached by file content hash and tokenizer settings."""
    settings = {k: getattr(cfg, k) for k in ("text_columns", "label_column", "tokenizer", "ngrams", "on_bad_row")}
    key = hashlib.sha256(Path(path).read_bytes() + json.dumps([spec.name, settings]).encode()).hexdigest()[:32]
    cache = cache_dir() / f"{key}.json.gz"
    if cache.is_file():
        try:
            with gzip.open(cache, "rt", encoding="utf-8") as f:
                saved = json.load(f)
            log.info("tokenized %s: cache hit (%s)", Path(path).name, cache)
            return saved["tokens"], Rows(saved["texts"], saved["labels"], saved["skipped"])
        except (OSError, ValueError, KeyError):
            log.warning("ignoring an unreadable token cache %s", cache)
    rows = read_rows(path, spec, cfg)
    tokens = [tokenize(t, cfg) for t in rows.texts]
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as f:
            json.dump({"tokens": tokens, "texts": rows.texts, "labels": rows.labels, "skipped": rows.skipped}, f)
        tmp.replace(cache)
    except OSError as e:
        log.warning("could not write the token cache %s: %s", cache, e)
    return tokens, rows


def cache_dir() -> Path:
    if os.environ.get("KILN_CACHE"):
        return Path(os.environ["KILN_CACHE"]) / "tokens"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kiln" / "tokens"


# --------------------------------------------------------------------------- batches

@dataclass
class TextBatch:
    """A batch of token sequences. pad: ids (B, T) padded with pad_id, mask (B, T) True on real tokens;
    offsets: ids (N,) all sequences back to back, offsets (B,) where each starts."""

    ids: torch.Tensor
    lengths: torch.Tensor  # (B,) tokens per sequence, >= 1
    mask: torch.Tensor | None = None
    offsets: torch.Tensor | None = None

    def to(self, device: torch.device, non_blocking: bool = False) -> "TextBatch":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.to(device, non_blocking=non_blocking) if t is not None else None

        return TextBatch(self.ids.to(device, non_blocking=non_blocking), self.lengths, move(self.mask),
                         move(self.offsets))  # lengths stay on the host

    def pin_memory(self) -> "TextBatch":
        """Called by the DataLoader (pin_memory=True on CUDA) so the copy to the GPU overlaps compute."""
        def pin(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.pin_memory() if t is not None else None

        return TextBatch(self.ids.pin_memory(), self.lengths, pin(self.mask), pin(self.offsets))

    def __len__(self) -> int:
        return len(self.lengths)


def pad_collate(seqs: list[torch.Tensor], pad_id: int, max_len: int | None = None) -> TextBatch:
    """Pad to the longest sequence in the batch (after truncation to max_len)."""
    seqs = [s[:max_len] for s in seqs] if max_len else seqs
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_id).long()
    mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    return TextBatch(ids, lengths, mask=mask)


def offsets_collate(seqs: list[torch.Tensor], max_len: int | None = None) -> TextBatch:
    """All sequences concatenated, with the offset where each starts (nn.EmbeddingBag's input)."""
    seqs = [s[:max_len] for s in seqs] if max_len else seqs
    lengths = torch.tensor([len(s) for s in seqs])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
    return TextBatch(torch.cat(seqs).long(), lengths, offsets=offsets)


def collate(seqs: list[torch.Tensor], mode: str, pad_id: int = 0) -> TextBatch:
    """The batch layout a run was configured with (data.text.collate): pad or offsets."""
    return pad_collate(seqs, pad_id) if mode == "pad" else offsets_collate(seqs)


class TokenDataset(Dataset):
    """Encoded texts and labels; `__getitems__` collates a whole batch (in a worker when there are workers)."""

    def __init__(self, seqs: list[torch.Tensor], labels: torch.Tensor, collate: str, pad_id: int):
        self.seqs, self.labels, self.collate, self.pad_id = seqs, labels, collate, pad_id
        self.lengths = torch.tensor([len(s) for s in seqs])

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> tuple[TextBatch, torch.Tensor]:
        seqs = [self.seqs[i] for i in indices]
        batch = collate(seqs, self.collate, self.pad_id)
        return batch, self.labels[torch.as_tensor(indices)]


class TextBatches(LoaderBatches):
    """Text batches through a DataLoader, plus the padding fraction of an epoch's plan."""

    def __init__(self, dataset: TokenDataset, **kwargs: Any):
        super().__init__(dataset, **kwargs)
        self.lengths = dataset.lengths
        self.collate = dataset.collate

    def epoch_stats(self, epoch: int) -> dict[str, float]:
        """Fraction of padded slots in this epoch's batches (0 for offsets batches: they have no padding)."""
        if self.collate != "pad":
            return {"pad_fraction": 0.0}
        slots = tokens = 0
        for idx in self.sampler.batches(epoch):
            lengths = self.lengths[idx]
            slots += int(lengths.max()) * len(idx)
            tokens += int(lengths.sum())
        return {"pad_fraction": 1 - tokens / max(slots, 1)}


def encode_texts(texts: list[str], vocab: Vocab, cfg: TextConfig) -> list[torch.Tensor]:
    return [torch.tensor(vocab.encode(tokenize(t, cfg), cfg.max_len), dtype=torch.int32) for t in texts]


def build_text_data(spec: CsvDataset, cfg: DataConfig, *, seed: int, device: torch.device, splits: tuple[str, ...],
                    overfit_batches: int, rank: int, world_size: int, vocab: Vocab | None = None) -> Data:
    folder = locate(spec, cfg.root, cfg.download)
    tc = cfg.text
    train_tokens, train_rows = cached_tokens(folder / "train.csv", spec, tc)
    class_names = list(spec.class_names or tc.label_names or infer_class_names(train_rows.labels or []))
    one_based = not spec.header
    train_labels, kept = label_ids(train_rows, class_names, folder / "train.csv", tc, one_based)
    train_tokens = [train_tokens[i] for i in kept]
    train_idx, val_idx = train_val_split(len(train_labels), cfg, overfit_batches)
    if vocab is None:
        vocab = Vocab.build((train_tokens[i] for i in train_idx.tolist()), tc.min_freq, tc.max_vocab)
    labels = torch.tensor(train_labels, dtype=torch.long)

    def encoded(token_lists, idx) -> list[torch.Tensor]:
        return [torch.tensor(vocab.encode(token_lists[i], tc.max_len), dtype=torch.int32) for i in idx.tolist()]

    def batches(seqs, labels, *, train: bool) -> Batches:
        dataset = TokenDataset(seqs, labels, tc.collate, vocab.pad_id)
        size = cfg.batch_size if train else eval_batch_size(cfg)
        shuffle = train and not overfit_batches
        sampler: EpochBatchSampler
        if shuffle and tc.bucket:
            sampler = BucketBatchSampler(dataset.lengths, size, seed=seed, rank=rank, world_size=world_size)
        else:
            sampler = EpochBatchSampler(len(seqs), size, shuffle=shuffle, drop_last=False, seed=seed, rank=rank,
                                        world_size=world_size)
        return TextBatches(dataset, sampler=sampler, device=device, seed=seed, num_workers=cfg.num_workers)

    sources, sizes = {}, {}
    if "train" in splits:
        sources["train"] = batches(encoded(train_tokens, train_idx), labels[train_idx], train=True)
        sizes["train"] = len(train_idx)
    if "val" in splits and len(val_idx):
        sources["val"] = batches(encoded(train_tokens, val_idx), labels[val_idx], train=False)
        sizes["val"] = len(val_idx)
    if "test" in splits:
        test_tokens, test_rows = cached_tokens(folder / "test.csv", spec, tc)
        test_labels, kept = label_ids(test_rows, class_names, folder / "test.csv", tc, one_based)
        test_tokens = [test_tokens[i] for i in kept]
        all_idx = torch.arange(len(test_labels))
        sources["test"] = batches(encoded(test_tokens, all_idx), torch.tensor(test_labels, dtype=torch.long),
                                  train=False)
        sizes["test"] = len(test_labels)
    info = DataInfo(spec.name, "text", len(class_names), class_names, vocab_size=len(vocab), pad_id=vocab.pad_id)
    return Data(info, sources.get("train"), sources.get("val"), sources.get("test"), sizes, "dataloader", vocab)
