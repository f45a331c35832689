#!/bin/bash
# The shape-autoencoder screen of docs/shape_autoencoder_eval.md: each variant trains 600 steps
# (the default run's budget) in its own workdir and is scored on 100 held-out shapes, meshed at
# 64³ (coarse 16³, seeded), in the InstPIFu convention. Two variants at a time share the 2
# cores, so each pair ran side by side at the same speed.
#   bash launch/shape_screen.sh OUT [VARIANT ...]      then: python launch/shape_table.py OUT/*
set -euo pipefail
out=${1:?usage: launch/shape_screen.sh OUT [VARIANT ...]}; shift
PD=--config.shape_model.part_distances=True
SAMPLING="--config.shape_training.balanced_bce=True --config.shape_training.near_surface_share=0.75"
NOAUG=--config.shape_training.augment_probability=0.0
LR2=--config.shape_training.learning_rate=0.002
declare -A VARIANTS=(
  [issue21_default]="--config.shape_model.part_distances=False --config.shape_training.augment_probability=0.5 --config.shape_training.learning_rate=0.001"
  [all]="$PD $SAMPLING $NOAUG $LR2"
  [all_but_augment]="$PD $SAMPLING $LR2 --config.shape_training.augment_probability=0.5"
  [all_but_part_distances]="$SAMPLING $NOAUG $LR2 --config.shape_model.part_distances=False"
  [all_but_sampling]="$PD $NOAUG $LR2"  # today's default
  [all_but_sampling_seed1]="$PD $NOAUG $LR2 --config.shape_training.seed=1"
  [all_but_sampling_and_part_distances]="$NOAUG $LR2 --config.shape_model.part_distances=False"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(all all_but_augment all_but_part_distances all_but_sampling
                                 all_but_sampling_seed1 all_but_sampling_and_part_distances
                                 issue21_default)
run() {
  python -m scenediff_jax.main --config=configs/synthetic.py --workdir="$out/$1" --mode=train_shape \
    --config.shape_training.steps=600 --config.shape_eval.num_shapes=100 \
    --config.shape_eval.mesh_resolution=64 --config.shape_eval.coarse_resolution=16 \
    ${VARIANTS[$1]} > "$out/$1.log" 2>&1
}
mkdir -p "$out"
for ((i = 0; i < ${#names[@]}; i += 2)); do
  run "${names[i]}" &
  [ $((i + 1)) -lt ${#names[@]} ] && run "${names[i + 1]}" &
  wait
done
