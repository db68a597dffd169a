"""Generated sample data in the layouts kiln reads, so a project from `kiln new` trains before the user's own data
is in place (and the tests train on the same): pictures in class folders, scenes with masks, scenes with boxes."""

from __future__ import annotations

from pathlib import Path


def write_sample_photos(folder: Path, per_class: int = 80) -> Path:
    """Generated colour pictures in class folders (a red square, a green disc, a blue cross at random places and
    sizes, PNG and JPEG), so the folder template trains at once. Returns the folder."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(0)
    for name, colour in (("red_square", (220, 40, 40)), ("green_disc", (40, 180, 60)), ("blue_cross", (40, 60, 220))):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = rng.randint(40, 72), rng.randint(40, 72)
            img = Image.new("RGB", (w, h), (rng.randint(90, 200), rng.randint(90, 200), rng.randint(90, 200)))
            draw = ImageDraw.Draw(img)
            r = rng.randint(6, min(w, h) // 3)
            x, y = rng.randint(r, w - r), rng.randint(r, h - r)
            if name == "red_square":
                draw.rectangle((x - r, y - r, x + r, y + r), fill=colour)
            elif name == "green_disc":
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
            else:
                draw.rectangle((x - r, y - r // 3, x + r, y + r // 3), fill=colour)
                draw.rectangle((x - r // 3, y - r, x + r // 3, y + r), fill=colour)
            img.save(folder / name / f"{i:03d}.{'jpg' if i % 2 else 'png'}")
    return folder


SEGMENT_CLASSES = ["background", "disc", "square"]


def write_segmentation_scenes(root: Path, n: int = 120, size: int = 48, seed: int = 0, val: bool = False) -> Path:
    """train/ (n scenes), test/ (n // 4) and, with `val`, val/ (n // 4): RGB images on a noisy background holding a
    red disc and a blue square at random places and sizes (either may be missing), with masks/<stem>.png of class
    indices (0 background, 1 disc, 2 square) and classes.txt."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(SEGMENT_CLASSES) + "\n")
    splits = [("train", n), ("test", n // 4)] + ([("val", n // 4)] if val else [])
    for split, count in splits:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = Image.fromarray(rng.integers(60, 180, (size, size, 3)).astype(np.uint8), "RGB")
            mask = Image.new("L", (size, size), 0)
            draw, mdraw = ImageDraw.Draw(img), ImageDraw.Draw(mask)
            for cls, colour in ((1, (220, 40, 40)), (2, (40, 60, 220))):
                if rng.random() < 0.85:
                    r = int(rng.integers(5, 12))
                    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
                    box = (cx - r, cy - r, cx + r, cy + r)
                    (draw.ellipse if cls == 1 else draw.rectangle)(box, fill=colour)
                    (mdraw.ellipse if cls == 1 else mdraw.rectangle)(box, fill=cls)
            img.save(root / split / "images" / f"scene{i:04d}.{'jpg' if i % 3 == 0 else 'png'}")
            mask.save(root / split / "masks" / f"scene{i:04d}.png")
    return root


DETECT_CATEGORIES = {3: "disc", 7: "square"}  # COCO ids need not be contiguous


def write_detection_scenes(root: Path, n: int = 120, size: int = 96, seed: int = 0) -> Path:
    """The same scenes in both layouts kiln reads: images/ + annotations/{train,test}.json (COCO, category ids 3
    and 7) and {train,test}/images + labels/*.txt + classes.txt (YOLO). Each image holds one to two red discs or
    blue squares at random places and sizes on a noisy background; every fifth image holds none."""
    import json

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("disc\nsquare\n")
    for split, count in (("train", n), ("test", n // 4)):
        coco: dict = {"images": [], "annotations": [],
                      "categories": [{"id": i, "name": name} for i, name in DETECT_CATEGORIES.items()]}
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = f"{split}{i:04d}.png"
            img = Image.fromarray(rng.integers(60, 180, (size, size, 3)).astype(np.uint8), "RGB")
            draw, lines = ImageDraw.Draw(img), []
            coco["images"].append({"id": 100 + i, "file_name": name, "width": size, "height": size})
            for _ in range(0 if i % 5 == 4 else int(rng.integers(1, 3))):
                cat = int(rng.integers(0, 2))
                r = int(rng.integers(9, 18))
                cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
                box = (cx - r, cy - r, cx + r, cy + r)
                (draw.ellipse if cat == 0 else draw.rectangle)(box, fill=(220, 40, 40) if cat == 0 else (40, 60, 220))
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": 100 + i,
                                            "category_id": list(DETECT_CATEGORIES)[cat],
                                            "bbox": [cx - r, cy - r, 2 * r, 2 * r], "area": 4 * r * r, "iscrowd": 0})
                lines.append(f"{cat} {cx / size:.6f} {cy / size:.6f} {2 * r / size:.6f} {2 * r / size:.6f}")
            img.save(root / "images" / name)
            img.save(root / split / "images" / name)
            (root / split / "labels" / f"{split}{i:04d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        (root / "annotations" / f"{split}.json").write_text(json.dumps(coco))
    return root
