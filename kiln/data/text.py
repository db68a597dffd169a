"""Text classification batches: padded or offsets `TextBatch`es of token ids, and `build_text_data`, which
puts the rows (csv_rows), tokens (token_cache), vocabulary (vocab) and batches together.

The vocabulary is built from the training split only and saved in the run folder (vocab.json) — or, for a
Hugging Face model, is the model's own tokenizer (kiln.data.model_tokenizer, saved as tokenizer/) — so `kiln test`
and `kiln predict` encode text exactly as training did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from kiln.config import DataConfig
from kiln.data.info import Data, DataInfo
from kiln.data.splits import cv_folds, train_val_split
from kiln.data.csv_rows import row_targets
from kiln.errors import KilnError
from kiln.data.loaders import (
    Batches,
    BucketBatchSampler,
    EpochBatchSampler,
    LoaderBatches,
    eval_batch_size,
    training_sampler,
)
from kiln.data.model_tokenizer import ModelTokenizer
from kiln.data.registry import CsvDataset, locate
from kiln.data.token_cache import cached_tokens
from kiln.data.vocab import Vocab

log = logging.getLogger("kiln")
PAD, UNK = "<pad>", "<unk>"


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


def build_text_data(spec: CsvDataset, cfg: DataConfig, *, seed: int, device: torch.device, splits: tuple[str, ...],
                    overfit_batches: int, rank: int, world_size: int, vocab: Vocab | ModelTokenizer | None = None,
                    task: str = "multiclass") -> Data:
    from kiln.tasks.targets import as_tensor, columns
    from kiln.tasks import TASKS

    folder = locate(spec, cfg.root, cfg.download)
    tc = cfg.text
    kind = TASKS[task]
    kind.check_columns(columns(tc.label_column), "data.text.label_column")
    empty_labels = kind.empty_label_ok
    model_tokenizer = vocab if isinstance(vocab, ModelTokenizer) else None
    if tc.tokenizer == "model" and model_tokenizer is None:
        raise KilnError("data.text.tokenizer=model needs the model's tokenizer (kiln.data.model_tokenizer."
                        "fresh_encoder(cfg) for a new run, RunDir.vocab() for a trained one)")

    def tokenized(path):
        return cached_tokens(path, spec, tc, empty_labels, model_tokenizer)

    train_tokens, train_rows = tokenized(folder / "train.csv")
    raws = train_rows.labels or []
    class_names = kind.target_names(list(spec.class_names or tc.label_names or []), raws, columns(tc.label_column),
                                    cfg.label_separator, folder / "train.csv")
    one_based = not spec.header

    def targets_of(rows, path):
        return row_targets(rows, class_names, path, tc, task, cfg.label_separator, one_based)

    train_labels, kept = targets_of(train_rows, folder / "train.csv")
    train_tokens = [train_tokens[i] for i in kept]
    labels = as_tensor(train_labels)
    fold_labels = kind.fold_keys(labels, cfg.cv.folds if cfg.cv else 2)
    train_idx, val_idx = train_val_split(len(train_labels), cfg, overfit_batches,
                                         # a multiclass text split stays unstratified, as it always was: a saved run resumes on the same split
                                         None if kind.class_per_sample else kind.split_keys(labels), fold_labels)
    if vocab is None:
        vocab = Vocab.build((train_tokens[i] for i in train_idx.tolist()), tc.min_freq, tc.max_vocab)

    def encoded(token_lists, idx) -> list[torch.Tensor]:
        return [torch.tensor(vocab.encode(token_lists[i], tc.max_len), dtype=torch.int32) for i in idx.tolist()]

    def batches(seqs, labels, *, train: bool) -> Batches:
        dataset = TokenDataset(seqs, labels, tc.collate, vocab.pad_id)
        size = cfg.batch_size if train else eval_batch_size(cfg)
        shuffle = train and not overfit_batches
        sampler: EpochBatchSampler
        if shuffle and cfg.sampler == "weighted":
            if tc.bucket:
                raise KilnError("data.sampler=weighted and data.text.bucket=true cannot be combined: choose one")
            sampler = training_sampler(labels, size, weighted=True, seed=seed, rank=rank, world_size=world_size)
        elif shuffle and tc.bucket:
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
    if "test" in splits and cfg.cv is not None:  # the held-out fold of the training file
        held = cv_folds(len(train_labels), cfg, fold_labels)[1]
        sources["test"] = batches(encoded(train_tokens, held), labels[held], train=False)
        sizes["test"] = len(held)
    elif "test" in splits:
        test_tokens, test_rows = tokenized(folder / "test.csv")
        test_labels, kept = targets_of(test_rows, folder / "test.csv")
        test_tokens = [test_tokens[i] for i in kept]
        all_idx = torch.arange(len(test_labels))
        sources["test"] = batches(encoded(test_tokens, all_idx), as_tensor(test_labels), train=False)
        sizes["test"] = len(test_labels)
    info = DataInfo(spec.name, "text", len(class_names), class_names, vocab_size=len(vocab), pad_id=vocab.pad_id)
    return Data(info, sources.get("train"), sources.get("val"), sources.get("test"), sizes, "dataloader", vocab)
