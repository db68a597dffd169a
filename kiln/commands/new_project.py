"""`kiln new DIR`: a small, runnable project of your own — a config wired to your code, a documented model and
Dataset, a smoke test, a README and a .gitignore. No copy of kiln's code: the project depends on kiln."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kiln.commands.samples import write_detection_scenes, write_sample_photos, write_segmentation_scenes
from kiln.core.errors import KilnError

# kiln new's templates: a project of its own (model, Dataset, config, smoke test) on generated images or texts, or
# on a folder of pictures (written with the project). Their files are package data under kiln/templates/new_project.
TEMPLATES = ("image", "text", "folder", "task", "segmentation", "detection")
TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates" / "new_project"
# template -> (what writes its sample data, the folder under data/)
SAMPLE_DATA: dict[str, tuple[Callable[[Path], Path], str]] = {
    "folder": (write_sample_photos, "photos"), "segmentation": (write_segmentation_scenes, "scenes"),
    "detection": (lambda folder: write_detection_scenes(folder, n=60), "boxes")}


def new_project(folder: Path, template: str = "image", force: bool = False,
                from_project: Path | None = None) -> list[Path]:
    """Write the project (or, with `from_project`, a kiln config for a pytorch-template project); returns the files
    written."""
    if template not in TEMPLATES:
        raise KilnError(f"--template {template!r}: choose {', '.join(TEMPLATES)}")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not force:
        raise KilnError(f"{folder} is not empty; choose a new folder, or pass --force to write into it "
                        "(files of the same name are replaced)")
    if from_project is not None:
        return _from_template_project(folder, Path(from_project))
    written = _write_files(folder, template_files(template))
    if template in SAMPLE_DATA:  # templates that read files: generated ones to start with, in data/
        write, sub = SAMPLE_DATA[template]
        written.append(write(folder / "data" / sub))
    return written


def template_files(template: str) -> dict[str, str]:
    """A template's files (path in the project -> text): kiln/templates/new_project/common/, and the template's own
    folder over it. A `.tmpl` suffix keeps them from being taken for kiln's code; `dot_` stands for a leading dot."""
    files: dict[str, str] = {}
    for part in ("common", template):
        root = TEMPLATES_DIR / part
        for path in sorted(p for p in root.rglob("*.tmpl") if p.is_file()):
            name = path.relative_to(root).as_posix().removesuffix(".tmpl")
            files["." + name.removeprefix("dot_") if name.startswith("dot_") else name] = path.read_text()
    return files


def _from_template_project(folder: Path, project: Path) -> list[Path]:
    """configs/train.yaml equivalent to a pytorch-template project's config.json (its code stays where it is), a
    README listing what was mapped differently or not at all, and a .gitignore."""
    import yaml

    from kiln.commands.migrate import migrate

    m = migrate(project, folder / "configs")
    header = "".join(f"# {line}\n" for line in [f"Brought over from {Path(project).resolve() / 'config.json'} by "
                                                  "`kiln new --from`."] + [f"- {n}" for n in m.notes])
    files = {"configs/train.yaml": header + yaml.safe_dump(m.config, sort_keys=False),
             "README.md": (TEMPLATES_DIR / "migrated_README.md.tmpl").read_text().format(
                 project=Path(project).resolve(), notes="\n".join(f"- {n}" for n in m.notes) or "- (none)"),
             ".gitignore": template_files("common")[".gitignore"]}
    return _write_files(folder, files)


def _write_files(folder: Path, files: dict[str, str]) -> list[Path]:
    """Each `files` entry (path relative to `folder` -> text) written; the paths, in order."""
    written = []
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
