#!/usr/bin/env bash
# Downloads into .whl/ the wheels an offline GPU machine lacks to import flax-cae (its image has jax,
# flax, optax, orbax, chex, absl, numpy, scikit-image, PyTorch, but not these; it reaches no
# registry). Run here, once, before benchmarks/device_run.sh is sent there with carry=[".whl"].
# Pinned to the versions CI installs today; Python 3.12, x86-64 Linux, like the device image.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .gitignore || { echo ".whl/ must stay ignored (.gitignore)" >&2; exit 1; }
WHEELS=(
  tensorflow-datasets==4.9.10 array-record==0.8.6 dm-pix==0.4.5 ml-collections==1.1.0
  tensorboardX==2.6.5 constriction==0.5.0  # launch.py imports the range coder (studies)
  # tensorflow-datasets' own needs that the image lacks
  dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9 docstring-parser==0.18.0
  tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 termcolor==3.3.0 toml==0.10.2
)
rm -rf .whl && mkdir .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${WHEELS[@]}"
# promise (another of tensorflow-datasets' needs) is published as source only: build its
# pure-Python wheel here.
python3 -m pip wheel -q --no-deps -w .whl promise==2.3
ls .whl
du -sh .whl
