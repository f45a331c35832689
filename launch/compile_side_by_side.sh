#!/bin/bash
# The paper-size train step of an earlier revision and of this checkout, one after the
# other in one run (BENCHMARKS.md, section 6): init and step compile, s/step, MFU, and (this
# checkout's benchmark only) a restart with the compilation cache warm.
#   bash launch/compile_side_by_side.sh [REVISION=d7b1689] [OUT=runs/compile_side_by_side] [VARIANT=paper]
set -euo pipefail
cd "$(dirname "$0")/.."
revision=${1:-d7b1689}
out=${2:-runs/compile_side_by_side}
variant=${3:-paper}
mkdir -p "$out"
out=$(cd "$out" && pwd)
previous=$(mktemp -d)/previous
git worktree add --detach "$previous" "$revision" > /dev/null
trap 'git worktree remove --force "$previous"' EXIT
unset JAX_COMPILATION_CACHE_DIR  # cold compiles: each benchmark makes its own cache
for which in previous current; do
  repo=$([ "$which" = previous ] && echo "$previous" || pwd)
  (cd "$repo" && python -m scenediff_jax.benchmark --sections=train_step --train_variants="$variant" \
    --train_stages=diffusion --out="$out/$which.json" > "$out/$which.log" 2>&1)
  echo "$which done $(date +%T): $out/$which.json"
done
