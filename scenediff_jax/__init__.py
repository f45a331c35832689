"""scenediff_jax: image-conditioned 3D scene diffusion in JAX/Flax."""
