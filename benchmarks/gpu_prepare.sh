#!/usr/bin/env bash
# Prepare what benchmarks/gpu_check.sh brings to a GPU machine that has no internet: wheels of kiln's
# dependencies that such a machine lacks (for its Python 3.12, manylinux x86-64; one version each, the
# versions installed in this checkout's .venv) and the Fashion-MNIST files from the Debian package.
# Everything goes to benchmarks/.gpu/ (git-ignored; carry it to the machine), checked to be under 64 MiB.
#
#   bash benchmarks/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dest=benchmarks/.gpu
PY=${PYTHON:-.venv/bin/python}
FASHION=${FASHION_DIR:-/usr/share/datasets/fashion-mnist}
# Missing from the GPU image (torch, torchvision, lightning, torchmetrics, matplotlib, rich, pyyaml, pillow,
# tensorboard, fsspec and nvidia-ml-py are there): pydantic and optuna with their dependencies, and webdataset.
PACKAGES="pydantic pydantic-core annotated-types typing-inspection typing-extensions optuna alembic sqlalchemy
mako colorlog cmaes webdataset braceexpand"

rm -rf "$dest/wheels"
mkdir -p "$dest/wheels" "$dest/data/fashion_mnist"
pins=()
for name in $PACKAGES; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  pins+=("$name==$version")
done
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any -d "$dest/wheels" "${pins[@]}"

if [ ! -f "$FASHION/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST not found in $FASHION: run 'make data' first" >&2
  exit 2
fi
cp "$FASHION"/*-ubyte.gz "$dest/data/fashion_mnist/"

size=$(du -sm "$dest" | cut -f1)
echo "prepared $dest: $(ls "$dest/wheels" | wc -l) wheels + Fashion-MNIST, ${size} MiB"
if [ "$size" -ge 64 ]; then
  echo "benchmarks/.gpu is ${size} MiB; the GPU machine takes at most 64 MiB with the repository" >&2
  exit 1
fi
