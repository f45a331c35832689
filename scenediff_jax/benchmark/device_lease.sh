#!/bin/bash
# The accelerator checks of issue 25 in one call that fits a 15-minute lease (a call may
# run 10 minutes): on the GPU,
#   1. the paper-size train step in bfloat16: init and step compile, steps/s and MFU
#      against the card's bfloat16 peak, and a restart with the compilation cache warm;
#   2. one paper-size scene of 10 objects end to end: DDIM 100, then 128³ meshes.
# Each part has its own time limit, so the first cannot starve the second; results go to
# $OUT (JSON and logs) for BENCHMARKS.md.
#
#   here, once:  bash scenediff_jax/benchmark/device_lease.sh prepare
#                (downloads the packages the GPU image lacks into .whl/, git-ignored)
#   there:       run(command='OUT=$OUT bash scenediff_jax/benchmark/device_lease.sh',
#                    carry=['.whl'], timeout_s=600)
set -u -o pipefail
cd "$(dirname "$0")/../.."

# What the GPU image (jax, flax, optax, orbax, numpy, absl, tqdm, pillow there) lacks.
MISSING=(ml-collections==1.1.0 trimesh==5.2.0 tensorflow-datasets==4.9.10 array-record==0.8.6
         grain==0.2.18 dm-tree==0.1.10 immutabledict==4.3.1 promise==2.3 simple-parsing==0.1.9
         tensorflow-metadata==1.21.0 termcolor==3.3.0 toml==0.10.2 docstring-parser==0.18.0
         googleapis-common-protos==1.76.0)

if [ "${1:-}" = prepare ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl "${MISSING[@]}" || { echo "download failed"; exit 1; }
  du -sh .whl
  exit 0
fi

OUT=${OUT:-lease_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl > "$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
python3 -c 'import jax; print(jax.__version__, jax.devices())' || exit 1

run() {  # name, seconds, benchmark flags...
  local name=$1 limit=$2; shift 2
  echo "== $name (at most ${limit} s)"
  timeout "$limit" python3 -m scenediff_jax.benchmark --out="$OUT/$name.json" "$@" \
    > "$OUT/$name.log" 2>&1
  echo "exit $? after $SECONDS s"; grep -E 'compiled|initialised|restart|Wrote' "$OUT/$name.log" | cut -c1-300
}
run train_step_paper_bf16 330 --sections=train_step --train_variants=paper \
  --train_stages=diffusion --compute_dtype=bfloat16
run one_scene_paper_bf16 200 --sections=sampling --sampling_variant=paper --compute_dtype=bfloat16
