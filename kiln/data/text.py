"""Text classification batches: padded or offsets `TextBatch`es of token ids, and `build_text_data`, which
puts the rows (csv_rows), tokens (token_cache), vocabulary (vocab) and batches together.

The vocabulary is built from the training split only and saved in the run folder (vocab.json) — or, for a
Hugging Face model, is the model's own tokenizer (kiln.data.model_tokenizer, saved as tokenizer/) — so `kiln test`
and `kiln predict` encode text exactly as training did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from kiln.config import DataConfig
from kiln.core.errors import KilnError
from kiln.data.assemble import Found, Pool, assemble, plan_splits, pools_needed, sampler_for
from kiln.data.csv_rows import row_targets
from kiln.data.info import Data, DataInfo, DataRequest
from kiln.data.loaders import (
    Batches,
    BucketBatchSampler,
    EpochBatchSampler,
    LoaderBatches,
)
from kiln.data.model_tokenizer import ModelTokenizer
from kiln.data.token_cache import Tokenized, cached_tokens
from kiln.data.token_store import MappedRows
from kiln.data.vocab import Vocab

if TYPE_CHECKING:
    from kiln.data.text_rows import TextRows

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
    """Encoded texts (MappedRows of a TokenStore) and labels; `__getitems__` collates a whole batch (in a worker when there are
    workers)."""

    def __init__(self, store: MappedRows, labels: torch.Tensor, collate: str, pad_id: int):
        self.store, self.labels, self.collate, self.pad_id = store, labels, collate, pad_id
        self.lengths = torch.from_numpy(store.lengths)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> tuple[TextBatch, torch.Tensor]:
        seqs = [torch.from_numpy(self.store.row(i)) for i in indices]
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


def build_text_data(spec: Any, cfg: DataConfig, request: DataRequest) -> Data:
    """A text dataset's rows (`spec.text_rows(cfg)`: pool -> CSV file or table) tokenized (cached), their targets
    read, split, and encoded with the training split's vocabulary (or the model's tokenizer)."""
    from kiln.tasks import task_class
    from kiln.tasks.targets import as_tensor, columns

    splits, task, vocab = request.splits, request.task, request.vocab
    texts: dict[str, TextRows] = spec.text_rows(cfg)
    tc, kind = cfg.text, task_class(task)
    kind.check_columns(columns(tc.label_column), "data.text.label_column")
    model_tokenizer = vocab if isinstance(vocab, ModelTokenizer) else None
    if tc.tokenizer == "model" and model_tokenizer is None:
        raise KilnError("data.text.tokenizer=model needs the model's tokenizer (kiln.data.model_tokenizer."
                        "fresh_encoder(cfg) for a new run, RunDir.vocab() for a trained one)")

    def tokenized(name: str) -> Tokenized:
        return cached_tokens(texts[name], tc, kind.empty_label_ok, model_tokenizer)

    def with_targets(tokenized: Tokenized, name: str) -> tuple[Tokenized, list]:
        """The rows' targets, and the rows with a bad target left out (data.on_bad_row=skip)."""
        targets, kept = row_targets(tokenized.rows, class_names, texts[name].where, tc, task, cfg.label_separator,
                                    texts[name].one_based)
        if len(kept) != len(tokenized.store):
            tokenized.store = tokenized.store.take(kept)
        return tokenized, targets

    first = "train" if "train" in texts else "all"
    train = tokenized(first)
    given = list(spec.class_names or tc.label_names or getattr(texts[first], "label_names", None) or [])
    class_names = kind.target_names(given, train.labels or [], columns(tc.label_column), cfg.label_separator,
                                    texts[first].where)
    train, train_targets = with_targets(train, first)
    labels = as_tensor(train_targets)
    # A multiclass text split stays unstratified, as it always was: a saved run resumes on the same split (one list
    # of every row, split by kiln, is stratified by the task's keys).
    strata = None if kind.class_per_sample and first == "train" else kind.split_keys(labels)
    pools = {first: Pool(len(train_targets), strata, kind.fold_keys(labels, cfg.cv.folds if cfg.cv else 2))}
    stores = {first: (train, labels)}
    for name in pools_needed(tuple(texts), splits, cfg):
        if name not in stores:
            rows, targets = with_targets(tokenized(name), name)
            pools[name], stores[name] = Pool(len(targets)), (rows, as_tensor(targets))
    plan = plan_splits(pools, cfg, request.overfit_batches)
    train_idx = plan["train"][1] if "train" in plan else torch.empty(0, dtype=torch.long)
    if vocab is None:
        assert train.tokens is not None
        vocab = Vocab.from_store(train.store, train_idx.numpy(), train.tokens, tc.min_freq, tc.max_vocab)

    info = DataInfo(spec.name, "text", len(class_names), class_names, vocab_size=len(vocab), pad_id=vocab.pad_id)
    return assemble(TokenizedText(info, stores, vocab, cfg, request), plan, request, Found(vocab=vocab))


@dataclass
class TokenizedText:
    """Tokenized CSV files as a Source: each pool's rows and targets, encoded with the vocabulary (or the model's
    tokenizer) as a split is asked for; batches through a DataLoader, the training split length-bucketed with
    data.text.bucket."""

    info: DataInfo
    stores: dict[str, tuple[Tokenized, torch.Tensor]]  # pool -> (its tokenized rows, their targets)
    vocab: Any  # a Vocab or a ModelTokenizer
    cfg: DataConfig
    request: DataRequest
    loader: str = "dataloader"

    def encoded(self, tokenized: Tokenized, idx: torch.Tensor) -> MappedRows:
        """The rows as the model's ids: kiln's token numbers through the vocabulary, cut at max_len, never empty
        (a model tokenizer's ids are that already) — mapped as batches ask for them."""
        if tokenized.tokens is None or not isinstance(self.vocab, Vocab):
            return MappedRows(tokenized.store, idx.numpy())
        return MappedRows(tokenized.store, idx.numpy(), self.vocab.lookup(tokenized.tokens), self.cfg.text.max_len,
                          Vocab.unk_id)

    def batches(self, split: str, pool: str, idx: torch.Tensor) -> Batches:
        cfg, request, train = self.cfg, self.request, split == "train"
        tokens, targets = self.stores[pool]
        dataset = TokenDataset(self.encoded(tokens, idx), targets[idx], cfg.text.collate, self.vocab.pad_id)
        sampler: EpochBatchSampler
        if train and not request.overfit_batches and cfg.text.bucket:
            if cfg.sampler == "weighted":
                raise KilnError("data.sampler=weighted and data.text.bucket=true cannot be combined: choose one")
            sampler = BucketBatchSampler(dataset.lengths, cfg.batch_size, seed=request.seed, rank=request.rank,
                                         world_size=request.world_size)
        else:  # a shuffled text split keeps its last, partial batch
            sampler = sampler_for(train, len(dataset), cfg, request, dataset.labels, drop_last=False)
        return TextBatches(dataset, sampler=sampler, device=request.device, seed=request.seed,
                           num_workers=cfg.num_workers)
