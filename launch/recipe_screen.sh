#!/usr/bin/env bash
# The recipe screen of docs/recipe.md: each variant trained at the screening budget from one
# shared shape stage, then scored on SynthRooms validation scenes (never the test split).
#   launch/recipe_screen.sh SHAPE_WORKDIR OUT VARIANT [VARIANT ...]
# SHAPE_WORKDIR holds a trained shape stage (checkpoints/shape, shape_latents.npz), e.g. a
# default run's workdir; each variant trains in OUT/VARIANT.
set -euo pipefail
shape_stage=$1 out=$2
shift 2
budget=(--config.training.diffusion_steps="${STEPS:-600}" --config.training.joint_steps="${JOINT:-100}"
        --config.eval.split=validation --config.eval.num_scenes="${SCENES:-100}")
recipe() {  # the flags of a variant: each row adds one change to the one above it
  case $1 in
    paper) ;;
    x0_clamped) echo --config.diffusion.prediction=x0 --config.diffusion.loss_weighting=clamped_snr ;;
    v_clamped) echo --config.diffusion.prediction=v --config.diffusion.loss_weighting=clamped_snr ;;
    x0_clamped_cosine) echo "$(recipe x0_clamped) --config.diffusion.schedule=cosine" ;;
    x0_clamped_part) echo "$(recipe x0_clamped) --config.training.latent_normalization=part" ;;
    x0_clamped_part_signal) echo "$(recipe x0_clamped_part) --config.training.align_weighting=signal" ;;
    regression) echo --config.method=regression --config.diffusion.condition_drop=0.0 --config.diffusion.guidance_scale=1.0 --config.eval.num_samples=1 ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}
for name in "$@"; do
  dir=$out/$name
  mkdir -p "$dir/checkpoints"
  [ -e "$dir/checkpoints/shape" ] || cp -r "$shape_stage/checkpoints/shape" "$dir/checkpoints/"
  [ -e "$dir/shape_latents.npz" ] || cp "$shape_stage/shape_latents.npz" "$dir/"
  # shellcheck disable=SC2046
  python -m scenediff_jax.main --config=configs/synthetic.py --workdir="$dir" "${budget[@]}" \
    $(recipe "$name") ${EXTRA:-} > "$dir/log.txt" 2>&1
done
