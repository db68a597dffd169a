"""Texts after training: strings and CSV rows encoded with the run's vocabulary (or its model's tokenizer) exactly as
training batched them; the export's input layouts and description; texts shown; TF-IDF for a classical baseline."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kiln.core.errors import KilnError
from kiln.core.formats import ExportInput, ExportMeta
from kiln.data.inputs.base import Inputs, PredictQuery, Shown


class TextInputs(Inputs):
    kind = "text"
    reads_text = True
    export_layouts = ("pad", "offsets", "masked")
    baseline_description = "TF-IDF (unigrams + bigrams of kiln's tokens)"
    baseline_strength = 4.0  # many sparse features: less regularisation than pixels

    def model_args(self, info) -> dict[str, Any]:
        return {"vocab_size": info.vocab_size, "num_classes": info.num_classes, "pad_id": info.pad_id}

    def predict_batches(self, query: PredictQuery) -> Iterator[tuple[list[str], Any]]:
        texts = list(query.inputs) + (_csv_texts(query.file, query.cfg) if query.file else [])
        if not texts:
            raise KilnError("nothing to predict: pass inputs as arguments or --file")
        if query.vocab is None:
            raise KilnError("the run has neither vocab.json nor tokenizer/: it is not a text run, or its folder is "
                            "incomplete")
        yield texts, self._batch(texts, query.cfg.data.text, query.vocab, query.info.pad_id).to(query.device)

    @staticmethod
    def _batch(texts: list[str], text_cfg, vocab, pad_id: int) -> Any:
        from kiln.data.text import collate
        from kiln.data.vocab import encode_texts

        return collate(encode_texts(texts, vocab, text_cfg), text_cfg.collate, pad_id)

    # -- export
    def export_layout(self, cfg) -> str:
        """pad or offsets (kiln's vocabulary), masked (a model's own tokenizer: ids + attention mask)."""
        return "masked" if cfg.data.text.tokenizer == "model" else cfg.data.text.collate

    def export_input(self, info, cfg, vocab) -> ExportInput:
        text, layout = cfg.data.text, self.export_layout(cfg)
        if layout == "masked":
            return {"layout": layout,
                    "tensors": {"input_ids": "int64 (batch, tokens), padded with pad_id",
                                "attention_mask": "int64 (batch, tokens), 1 on real tokens, 0 on padding"},
                    "tokenization": {"tokenizer": "model", "max_len": vocab.max_len(text),
                                     "rule": "the model's own tokenizer (transformers AutoTokenizer), special tokens "
                                             "added, truncated at max_len"},
                    "pad_id": info.pad_id}
        tensors = ({"ids": "int64 (batch, tokens), padded with pad_id", "lengths": "int64 (batch,)"} if layout == "pad"
                   else {"ids": "int64 (tokens,), every text back to back",
                         "offsets": "int64 (batch,), where each text starts"})
        return {"layout": layout, "tensors": tensors,
                "tokenization": {"tokenizer": text.tokenizer, "ngrams": text.ngrams, "max_len": text.max_len,
                                 "rule": "tokenize; add n-grams joined by a space; tokens not in vocab -> <unk>; an "
                                         "empty text becomes one <unk>"},
                "pad_id": info.pad_id, "vocab": vocab.itos if vocab is not None else None}

    def stand_in(self, info, layout: str, size: int) -> Any:
        from kiln.data.text import collate

        g = torch.Generator().manual_seed(0)
        seqs = [torch.randint(2, info.vocab_size, (int(n),), generator=g) for n in range(3, 3 + size)]
        return collate(seqs, "pad" if layout == "masked" else layout, info.pad_id)

    def exported_batch(self, meta: ExportMeta, path: Path, inputs: Sequence[str],
                       path_column: str | None) -> tuple[list[str], tuple[np.ndarray, ...]]:
        """Texts tokenised with the vocabulary and settings stored in the export's metadata (or with the model
        tokenizer in the folder it names beside the file)."""
        from kiln.config import TextConfig
        from kiln.data.text import collate
        from kiln.data.vocab import Vocab, encode_texts

        texts = list(inputs)
        if not texts:
            raise KilnError("nothing to predict: pass texts as arguments")
        spec = meta["input"]
        tok, layout = spec["tokenization"], spec["layout"]
        if layout == "masked":
            from kiln.data.model_tokenizer import ModelTokenizer

            cfg = TextConfig(tokenizer="model", max_len=tok["max_len"])
            encoder: Any = ModelTokenizer(path.parent / spec["tokenizer_dir"])
        else:
            cfg = TextConfig(tokenizer=tok["tokenizer"], ngrams=tok["ngrams"], max_len=tok["max_len"])
            itos = spec.get("vocab")
            if not itos:
                raise KilnError(f"{path}: its metadata holds no vocabulary for its {layout} text input; export the "
                                "run again with kiln export")
            encoder = Vocab(itos)
        batch = collate(encode_texts(texts, encoder, cfg), "offsets" if layout == "offsets" else "pad",
                        spec["pad_id"])
        second = batch.offsets if layout == "offsets" else batch.mask if layout == "masked" else batch.lengths
        assert second is not None
        return texts, (batch.ids.long().numpy(), second.long().numpy())

    # -- showing, and a classical baseline
    def show(self, cfg, batches, indices: torch.Tensor) -> Shown:
        from kiln.data.registry import get_dataset

        rows = get_dataset(cfg.data.name).text_rows(cfg.data)
        texts = rows["test" if "test" in rows else next(iter(rows))].texts(cfg.data.text)
        return Shown(texts=[texts[i] if i < len(texts) else "" for i in indices.tolist()])

    def one(self, value: str, info, cfg, vocab) -> Any:
        return self._batch([value], cfg.data.text, vocab, info.pad_id)

    def baseline_features(self, train, evaluation) -> tuple[Any, np.ndarray, Any, np.ndarray]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        train_docs, y_train = _token_lists(train)
        eval_docs, y_eval = _token_lists(evaluation)
        vectorizer = TfidfVectorizer(analyzer=_unigrams_and_bigrams, sublinear_tf=True, min_df=1)
        return vectorizer.fit_transform(train_docs), y_train, vectorizer.transform(eval_docs), y_eval


def _csv_texts(file: Path, cfg) -> list[str]:
    from kiln.data.csv_rows import read_rows
    from kiln.data.registry import get_dataset

    if not Path(file).is_file():
        raise KilnError(f"--file {file} not found")
    return read_rows(Path(file), get_dataset(cfg.data.name), cfg.data.text, require_labels=False).texts


def _unigrams_and_bigrams(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in itertools.pairwise(tokens)]


def _token_lists(batches) -> tuple[list[list[str]], np.ndarray]:
    """Every sample's token ids (as strings), and the labels, from kiln's own text batches."""
    docs, labels = [], []
    for batch, y in batches.epoch(0):
        if batch.offsets is None:
            docs += [[str(t) for t in row[:n].tolist()] for row, n in zip(batch.ids, batch.lengths.tolist())]
        else:
            ends = (batch.offsets + batch.lengths.to(batch.offsets.device)).tolist()
            docs += [[str(t) for t in batch.ids[s:e].tolist()] for s, e in zip(batch.offsets.tolist(), ends)]
        labels.append(y.cpu())
    return docs, torch.cat(labels).numpy()
