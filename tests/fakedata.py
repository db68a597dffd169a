"""Small, learnable image datasets written in the real IDX format (gzip), for tests."""

from __future__ import annotations

from pathlib import Path

import torch

from kiln.data.idx import write_idx


def make_images(n: int, num_classes: int = 10, seed: int = 0, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise plus a bright 6x6 block whose position encodes the class: easy to learn, not trivial."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = torch.randint(0, 90, (n, size, size), generator=g).to(torch.float32)
    for c in range(num_classes):
        r, col = 3 + 7 * (c // 4) , 3 + 6 * (c % 4)
        images[labels == c, r:r + 6, col:col + 6] += 150
    return images.clamp(0, 255).to(torch.uint8), labels.to(torch.uint8)


def write_idx_dataset(folder: Path, n_train: int = 480, n_test: int = 160, num_classes: int = 10,
                      gz: bool = True) -> Path:
    """The four MNIST-family files in `folder` (train-* and t10k-*)."""
    suffix = ".gz" if gz else ""
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = make_images(n, num_classes, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return folder


TOPICS = {
    0: ["election", "minister", "parliament", "treaty", "embassy"],
    1: ["match", "goal", "coach", "season", "tournament"],
    2: ["shares", "profit", "market", "investors", "merger"],
    3: ["software", "chip", "internet", "robot", "quantum"],
}
FILLER = ["the", "a", "of", "in", "on", "today", "report", "said", "new", "after", "über", "naïve", "café"]


def make_news(n: int, seed: int) -> list[tuple[int, str, str]]:
    """(1-based class, title, description) rows; the topic words make the class learnable."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.randrange(4)
        words = [rng.choice(TOPICS[label]) for _ in range(rng.randint(1, 3))]
        words += [rng.choice(FILLER) for _ in range(rng.randint(2, 30))]
        rng.shuffle(words)
        title = " ".join(words[:4]).capitalize()
        description = " ".join(words[4:])
        if i % 7 == 0:
            description = f'He said "{description}", and more, {rng.choice(FILLER)}'  # quotes and commas
        if i % 11 == 0:
            description = ""  # empty description
        rows.append((label + 1, title, description))
    return rows


def write_ag_news(folder: Path, n_train: int = 400, n_test: int = 120) -> Path:
    """train.csv / test.csv in the official AG News layout: no header, every field quoted, "" escapes."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.csv", n_train, 1), ("test.csv", n_test, 2)):
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, quoting=csv.QUOTE_ALL).writerows(make_news(n, seed))
    return folder


SHAPE_CLASSES = ["blue_disc", "blue_square", "red_disc", "red_square"]


def draw_shape_image(label: int, rng, size: tuple[int, int]):
    """A colour photo-like image whose class is colour x shape: a red or blue disc or square at a random position
    and scale on a noisy background of random tint (PIL, RGB)."""
    import numpy as np
    from PIL import Image, ImageDraw

    w, h = size
    tint = rng.integers(60, 200, 3)
    noise = rng.integers(-40, 40, (h, w, 3))
    img = Image.fromarray(np.clip(tint + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    r = int(min(w, h) * rng.uniform(0.18, 0.32))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
    colour = (230, 30, 30) if label >= 2 else (30, 30, 230)
    box = (cx - r, cy - r, cx + r, cy + r)
    (draw.rectangle if label % 2 else draw.ellipse)(box, fill=colour)
    return img


def write_image_folder(root: Path, n: int = 240, seed: int = 0, layout: str = "classes",
                       extras: bool = True) -> Path:
    """Colour images of mixed sizes and aspect ratios, JPEG and PNG, in `root/<class>/` (layout "classes") or
    `root/{train,val,test}/<class>/` (layout "splits"). `extras`: the oddities of real folders — an RGBA PNG, a
    palette PNG, a grayscale JPEG, a JPEG with an EXIF rotation, a hidden file and a non-image file."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folders = {"classes": [("", n)], "splits": [("train", n), ("val", n // 4), ("test", n // 4)]}[layout]
    for sub, count in folders:
        for i in range(count):
            label = i % len(SHAPE_CLASSES)
            size = (int(rng.integers(40, 96)), int(rng.integers(40, 96)))
            img = draw_shape_image(label, rng, size)
            folder = root / sub / SHAPE_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            if i % 2:
                img.save(folder / f"img{i:04d}.jpg", quality=90)
            else:
                img.save(folder / f"img{i:04d}.png")
    if extras:
        first = root / folders[0][0] / SHAPE_CLASSES[0]
        img = draw_shape_image(0, rng, (64, 48))
        rgba = img.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(first / "alpha.png")
        img.convert("P", palette=Image.Palette.ADAPTIVE).save(first / "palette.png")
        img.convert("L").save(first / "gray.jpg")
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
        img.save(first / "rotated.jpg", exif=exif)
        (first / ".hidden.png").write_bytes(b"not really")
        (first / "notes.txt").write_text("not an image")
    return root


def _write_image_csvs(root: Path, n: int, header: list[str], sample, seed: int = 0) -> Path:
    """train.csv (n rows) and test.csv (n // 3) over PNGs in root/images/ (paths relative to the CSVs);
    `sample(rng, i)` gives each row's image and its cells after the path."""
    import csv

    import numpy as np

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("test", n // 3)):
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for i in range(count):
                image, cells = sample(rng, i)
                name = f"images/{split}{i:04d}.png"
                image.save(root / name)
                writer.writerow([name, *cells])
    return root


def write_image_csv(root: Path, n: int = 120, seed: int = 0) -> Path:
    """train.csv and test.csv (columns path,label) of colour-and-shape images."""
    def sample(rng, i):
        label = i % len(SHAPE_CLASSES)
        return draw_shape_image(label, rng, (int(rng.integers(40, 80)), int(rng.integers(40, 80)))), [SHAPE_CLASSES[label]]

    return _write_image_csvs(root, n, ["path", "label"], sample, seed)


def write_cifar_binary(folder: Path, hundred: bool = False, per_file: int = 20) -> Path:
    """CIFAR binary files (fixed-size records) in their official folder; record i of every file is labelled
    i % classes and has a red plane of that value, so the layout can be checked."""
    import numpy as np

    sub, names, label_bytes, classes = (("cifar-100-binary", ["train.bin", "test.bin"], 2, 100) if hundred else
                                        ("cifar-10-batches-bin", [*(f"data_batch_{i}.bin" for i in range(1, 6)),
                                                                  "test_batch.bin"], 1, 10))
    (folder / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        records = np.zeros((per_file, label_bytes + 3072), dtype=np.uint8)
        labels = np.arange(per_file) % classes
        records[:, label_bytes - 1] = labels
        records[:, label_bytes:label_bytes + 1024] = labels[:, None]  # red plane
        records[:, label_bytes + 2048:] = 200  # blue plane
        records.tofile(folder / sub / name)
    return folder


BLOB_COLOURS = {"red": (230, 30, 30), "green": (30, 190, 30), "blue": (30, 30, 230)}
TOPIC_NAMES = ["politics", "sports", "business", "tech"]


def write_multilabel_image_csv(root: Path, n: int = 300, seed: int = 0) -> Path:
    """train.csv / test.csv (path,labels): each image holds a disc of each colour in BLOB_COLOURS with probability
    1/2, at a random place; labels like `red|blue`, empty for an image with none."""
    import numpy as np
    from PIL import Image, ImageDraw

    def sample(rng, i):
        present = [c for c in BLOB_COLOURS if rng.random() < 0.5]
        img = Image.fromarray(rng.integers(90, 170, (32, 32, 3)).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        for colour in present:
            cx, cy = (int(v) for v in rng.integers(5, 27, 2))
            draw.ellipse((cx - 5, cy - 5, cx + 5, cy + 5), fill=BLOB_COLOURS[colour])
        return img, ["|".join(present)]

    return _write_image_csvs(root, n, ["path", "labels"], sample, seed)


def write_multihead_image_csv(root: Path, n: int = 300, seed: int = 0) -> Path:
    """train.csv / test.csv (path,colour,shape): colour-and-shape images (SHAPE_CLASSES) labelled in two columns,
    colour (blue, red) and shape (disc, square)."""
    def sample(rng, i):
        label = int(rng.integers(0, len(SHAPE_CLASSES)))
        colour, shape = SHAPE_CLASSES[label].split("_")
        return draw_shape_image(label, rng, (40, 40)), [colour, shape]

    return _write_image_csvs(root, n, ["path", "colour", "shape"], sample, seed)


def write_regression_image_csv(root: Path, n: int = 300, seed: int = 0) -> Path:
    """train.csv / test.csv (path,brightness,x): one grey disc on a dark noisy background; `brightness` is its
    grey level (40–250) and `x` its centre's horizontal position (0–1)."""
    import numpy as np
    from PIL import Image, ImageDraw

    def sample(rng, i):
        level, cx, cy = int(rng.integers(40, 251)), int(rng.integers(7, 25)), int(rng.integers(7, 25))
        img = Image.fromarray(rng.integers(0, 30, (32, 32)).astype(np.uint8), "L")
        ImageDraw.Draw(img).ellipse((cx - 6, cy - 6, cx + 6, cy + 6), fill=level)
        return img, [level, f"{cx / 32:.4f}"]

    return _write_image_csvs(root, n, ["path", "brightness", "x"], sample, seed)


def _write_text_csvs(folder: Path, header: list[str], n_train: int, n_test: int, row) -> Path:
    """train.csv (seed 1) and test.csv (seed 2) with a header; `row(rng)` gives each row's cells."""
    import csv
    import random

    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.csv", n_train, 1), ("test.csv", n_test, 2)):
        rng = random.Random(seed)
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(row(rng) for _ in range(n))
    return folder


def write_multilabel_text_csv(folder: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """train.csv / test.csv (text,labels): each text mentions one to three of the topics (their words among
    filler), labels like `sports|tech`."""
    def row(rng):
        topics = sorted(rng.sample(range(4), rng.randint(1, 3)))
        words = [rng.choice(TOPICS[t]) for t in topics for _ in range(rng.randint(1, 2))]
        words += [rng.choice(FILLER) for _ in range(rng.randint(2, 15))]
        rng.shuffle(words)
        return [" ".join(words), "|".join(TOPIC_NAMES[t] for t in topics)]

    return _write_text_csvs(folder, ["text", "labels"], n_train, n_test, row)


def write_regression_text_csv(folder: Path, n_train: int = 300, n_test: int = 90) -> Path:
    """train.csv / test.csv (text,stars): a review of five words of praise or blame among filler; `stars` is the
    number of `great`s (0–5)."""
    def row(rng):
        stars = rng.randint(0, 5)
        words = ["great"] * stars + ["bad"] * (5 - stars) + [rng.choice(FILLER) for _ in range(5)]
        rng.shuffle(words)
        return [" ".join(words), stars]

    return _write_text_csvs(folder, ["text", "stars"], n_train, n_test, row)


def write_tiny_bert(folder: Path, max_positions: int = 64, seed: int = 0) -> Path:
    """A Hugging Face folder as `save_pretrained` writes it: a randomly initialised BERT (hidden size 32, 2 layers)
    and a WordPiece tokenizer trained on the test corpora's own words (config.json, model.safetensors,
    tokenizer.json, tokenizer_config.json)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    texts = [" ".join(words) for words in TOPICS.values()] + [" ".join(FILLER), "great bad"]
    texts += [f"{title} {description}" for _, title, description in make_news(200, seed)]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=300, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(folder)
    config = BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_positions, pad_token_id=fast.pad_token_id)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


# The scenes of kiln new's segmentation and detection templates, in the layouts kiln reads (kiln.commands.samples).
from kiln.commands.samples import (  # noqa: E402, F401
    DETECT_CATEGORIES,
    SEGMENT_CLASSES,
    write_detection_scenes,
)
from kiln.commands.samples import write_segmentation_scenes as write_segmentation_folder  # noqa: E402, F401


def shape_split(n: int, seed: int, size: tuple[int, int] = (40, 32)):
    """`n` shape images and their class numbers (PIL images, ints)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = [i % len(SHAPE_CLASSES) for i in range(n)]
    return [draw_shape_image(label, rng, size) for label in labels], labels


def write_hf_dataset(root: Path, n_train: int = 96, n_test: int = 32, seed: int = 0) -> Path:
    """A Hugging Face DatasetDict (train, test) with an `Image` and a `ClassLabel` feature, saved with
    save_to_disk."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=SHAPE_CLASSES)})
    splits = {}
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        images, labels = shape_split(n, s)
        splits[split] = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(root))
    return root


def write_parquet_images(root: Path, n_train: int = 96, n_test: int = 32, seed: int = 0) -> Path:
    """Plain Parquet files (no Hugging Face metadata) of PNG bytes and class names: train-*.parquet, test.parquet."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    for name, n, s in (("train-00000-of-00001.parquet", n_train, seed), ("test.parquet", n_test, seed + 1)):
        images, labels = shape_split(n, s)
        data = []
        for img in images:
            buffer = io.BytesIO()
            img.save(buffer, format="PNG")
            data.append(buffer.getvalue())
        pq.write_table(pa.table({"png": pa.array(data, pa.binary()),
                                 "kind": [SHAPE_CLASSES[label] for label in labels]}), root / name)
    return root
