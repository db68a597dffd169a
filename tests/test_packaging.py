"""kiln as a wheel: it installs under its distribution name, carries the shipped configs, and a shipped config runs
by name from any folder. The wheel goes into a fresh venv with --no-deps; the venv sees this environment's packages
(torch, ...) through a .pth file, so nothing is downloaded."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from kiln.cli import main


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (found,) = out.glob("kiln_train-*.whl")
    return found


def test_the_wheel_is_named_kiln_train_and_carries_every_shipped_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert {f"kiln/configs/{name}" for name in shipped} <= names
    assert "kiln/cli/__init__.py" in names and not any(n.startswith("tests/") for n in names)
    templates = {p.relative_to(ROOT).as_posix() for p in (ROOT / "kiln" / "templates").rglob("*.tmpl")}
    assert templates and templates <= names  # kiln new's project files
    packages = {str(p.parent.relative_to(ROOT)).replace("/", ".") for p in (ROOT / "kiln").rglob("__init__.py")}
    assert {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")} == packages


def test_the_installed_wheel_trains_a_shipped_config_by_name_from_another_folder(wheel, tmp_path, idx_root):
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)  # this environment's pip installs into it (--python): no ensurepip
    python = env / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch and friends, not kiln
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [env / "bin" / "kiln", "train", "fashion_mnist", "trainer.fast_dev_run=true", f"data.root={idx_root}",
               "data.val_split=96", "log.progress=none"]
    result = subprocess.run(command, cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    where = subprocess.run([python, "-c", "import kiln; print(kiln.__file__)"], capture_output=True, text=True,
                           cwd=elsewhere).stdout
    assert where.startswith(str(env))  # the wheel's kiln, not the source checkout
    assert list((elsewhere / "runs" / "fashion_mnist").glob("*/checkpoints/last.pt"))


def test_a_copy_writes_its_base_chain_beside_itself_and_nowhere_else(tmp_path, cli, monkeypatch):
    trial = tmp_path / "trial"
    trial.mkdir()
    monkeypatch.chdir(trial)
    copied = cli("configs", "--copy", "tune/image_folder", "tune_if.yaml")
    assert copied.returncode == 0, copied.stderr
    assert sorted(p.name for p in tmp_path.rglob("*.yaml")) == ["image_folder.yaml", "tune_if.yaml"]
    assert not (tmp_path / "image_folder.yaml").exists()  # never in the parent of the user's folder
    assert "wrote tune_if.yaml" in copied.stdout and "wrote image_folder.yaml" in copied.stdout
    assert "base: image_folder.yaml" in (trial / "tune_if.yaml").read_text()
    assert (trial / "image_folder.yaml").read_text() == (ROOT / "configs" / "image_folder.yaml").read_text()
    from kiln.commands.tune.space import load_tune_config

    assert load_tune_config(Path("tune_if.yaml")).base == trial / "image_folder.yaml"  # the rewritten base: resolves

    # the default name collides with its own base: the base gets a name of its own
    (trial / "own").mkdir()
    assert cli("configs", "--copy", "tune/image_folder", "own").returncode == 0
    assert sorted(p.name for p in (trial / "own").iterdir()) == ["image_folder.yaml", "image_folder_base.yaml"]
    assert "base: image_folder_base.yaml" in (trial / "own" / "image_folder.yaml").read_text()
    assert cli("configs", "--copy", "tune/image_folder").returncode == 2  # ./image_folder.yaml exists (the base above)

    # a file of the user's in the base's place is neither kept as the base nor replaced
    (trial / "mine").mkdir()
    (trial / "mine" / "image_folder.yaml").write_text("# mine\n")
    refused = cli("configs", "--copy", "tune/image_folder", "mine/t2.yaml")
    assert refused.returncode == 2 and "image_folder.yaml" in refused.stderr and "--force" in refused.stderr
    assert not (trial / "mine" / "t2.yaml").exists() and (trial / "mine" / "image_folder.yaml").read_text() == "# mine\n"
    assert cli("configs", "--copy", "tune/image_folder", "mine/t2.yaml", "--force").returncode == 0
    assert (trial / "mine" / "image_folder.yaml").read_text() != "# mine\n"


def test_shipped_configs_are_listed_and_copied_as_shipped(tmp_path, capsys):
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out
    assert "fashion_mnist " in listed and "The default config" in listed and "tune/fashion_mnist" in listed
    assert main(["configs", "--copy", "mnist", str(tmp_path)]) == 0  # mnist.yaml has base: fashion_mnist.yaml
    assert (tmp_path / "mnist.yaml").read_text() == (ROOT / "configs" / "mnist.yaml").read_text()
    assert (tmp_path / "fashion_mnist.yaml").read_text() == (ROOT / "configs" / "fashion_mnist.yaml").read_text()
    assert main(["configs", "--copy", "mnist", str(tmp_path)]) == 2  # never overwrites
    assert main(["config", str(tmp_path / "mnist.yaml")]) == 0  # the copy's base: resolves
    (tmp_path / "fashion_mnist").mkdir()  # a path always wins over a name
    assert main(["config", "fashion_mnist"]) == 0 and "name: fashion_mnist" in capsys.readouterr().out
    assert main(["config", "fashion_mnst"]) == 2
    assert "did you mean the shipped config 'fashion_mnist'?" in capsys.readouterr().err
