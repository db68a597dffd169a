"""Text classifiers over `TextBatch` inputs: EmbeddingBag (fast baseline), GRU (packed), Transformer encoder.

Every model ignores padding exactly: appending more padding to a batch leaves its outputs unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kiln.models.registry import register_model


class EmbeddingBagClassifier(nn.Module):
    """Mean of token (and n-gram) embeddings -> linear. fastText's model; trains in seconds per epoch."""

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int, embed_dim: int, dropout: float):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean", padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(embed_dim, num_classes)
        nn.init.uniform_(self.bag.weight, -0.5, 0.5)
        with torch.no_grad():
            self.bag.weight[pad_id].zero_()

    def forward(self, batch) -> torch.Tensor:
        if batch.offsets is not None:
            pooled = self.bag(batch.ids, batch.offsets)  # (B, E) from flat ids
        else:
            pooled = self.bag(batch.ids)  # (B, T) padded: padding_idx entries are left out of the mean
        return self.fc(self.dropout(pooled))


@register_model
def embedding_bag(vocab_size: int, num_classes: int, pad_id: int = 0, embed_dim: int = 64,
                  dropout: float = 0.0) -> nn.Module:
    """nn.EmbeddingBag mean pooling + a linear classifier; works with pad or offsets batches."""
    return EmbeddingBagClassifier(vocab_size, num_classes, pad_id, embed_dim, dropout)


class GRUClassifier(nn.Module):
    def __init__(self, vocab_size, num_classes, pad_id, embed_dim, hidden, layers, bidirectional, dropout):  # noqa: PLR0913 — the GRU's hyperparameters, passed on from gru()
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.gru = nn.GRU(embed_dim, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional,
                          dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, batch) -> torch.Tensor:
        x = self.embed(batch.ids)  # (B, T, E)
        # The recurrence runs in fp32 even under autocast: cuDNN's GRU would run in fp16 (also under bf16, and
        # without a gradient scaler), where its gradients through many steps underflow.
        with torch.autocast(x.device.type, enabled=False):
            packed = nn.utils.rnn.pack_padded_sequence(x.float(), batch.lengths.cpu(), batch_first=True,
                                                       enforce_sorted=False)
            _, h = self.gru(packed)  # (layers * directions, B, H): the last real step of every sequence
        last = torch.cat([h[-2], h[-1]], dim=1) if self.gru.bidirectional else h[-1]
        return self.fc(self.dropout(last))


@register_model
def gru(  # noqa: PLR0913 — model.args: each hyperparameter by name, checked against this signature
        vocab_size: int, num_classes: int, pad_id: int = 0, embed_dim: int = 128, hidden: int = 128,
        layers: int = 1, bidirectional: bool = True, dropout: float = 0.1) -> nn.Module:
    """Embedding -> (bi)GRU over packed sequences (padding never seen) -> last hidden state -> linear."""
    return GRUClassifier(vocab_size, num_classes, pad_id, embed_dim, hidden, layers, bidirectional, dropout)


def sinusoidal_positions(max_len: int, dim: int) -> torch.Tensor:
    position = torch.arange(max_len)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[:dim // 2])
    return table


class TransformerClassifier(nn.Module):
    def __init__(  # noqa: PLR0913 — the Transformer's hyperparameters, passed on from transformer()
            self, vocab_size, num_classes, pad_id, d_model, heads, layers, ff, dropout, max_len, positions, pooling):
        super().__init__()
        if pooling not in ("mean", "cls") or positions not in ("learned", "sinusoidal"):
            raise ValueError("pooling must be 'mean' or 'cls', positions 'learned' or 'sinusoidal'")
        self.pooling, self.max_len = pooling, max_len
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        if positions == "learned":
            self.positions = nn.Parameter(torch.randn(max_len + 1, d_model) * 0.02)
        else:
            self.register_buffer("positions", sinusoidal_positions(max_len + 1, d_model), persistent=False)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pooling == "cls" else None
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, batch) -> torch.Tensor:
        ids, mask = batch.ids[:, :self.max_len], batch.mask[:, :self.max_len]  # (B, T), True = token
        x = self.embed(ids) * math.sqrt(self.embed.embedding_dim)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1)
            mask = torch.cat([mask.new_ones(len(x), 1), mask], dim=1)
        x = x + self.positions[:x.shape[1]]
        x = self.norm(self.encoder(x, src_key_padding_mask=~mask))  # (B, T, D); padded keys never attended
        if self.cls is not None:
            return self.fc(x[:, 0])
        weights = mask.unsqueeze(-1).to(x.dtype)
        return self.fc((x * weights).sum(1) / weights.sum(1))  # mean over real tokens only


@register_model
def transformer(  # noqa: PLR0913 — model.args: each hyperparameter by name, checked against this signature
        vocab_size: int, num_classes: int, pad_id: int = 0, d_model: int = 128, heads: int = 4,
                layers: int = 2, ff: int = 256, dropout: float = 0.1, max_len: int = 256,
                positions: str = "learned", pooling: str = "mean") -> nn.Module:
    """A small pre-norm Transformer encoder with a padding mask; mean or CLS pooling."""
    return TransformerClassifier(vocab_size, num_classes, pad_id, d_model, heads, layers, ff, dropout, max_len,
                                 positions, pooling)
