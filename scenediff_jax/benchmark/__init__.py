"""Benchmarks: `python -m scenediff_jax.benchmark [--quick] [--out FILE.json]`.

Measured side by side in one run, medians over repeats after warm-up and compilation
(compile time reported apart). Sections (`--sections` picks some):
  nearest     the L_align nearest-neighbour kernel (nearest.py)
  train_step  the scene-diffusion train step: steps/s, FLOPs, utilisation (train_step.py)
  sampling    one 10-object scene, DDIM + meshes; DDPM vs DDIM pose metrics (sampling.py)
  mesh        dense vs coarse-to-fine marching cubes (meshing.py)
  input       SynthRooms generation and the input pipeline (data_input.py)
Each section carries a `check`: its kernel agrees with a reference, so a fast wrong kernel
fails (`--quick` runs in CI and asserts every check).
"""
