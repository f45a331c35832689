"""SynthRooms, our procedural benchmark: the embedded default experiment.

Variants: `default` (the full dataset), `smoke` (tiny, runs in seconds), `paper` (the
default data and schedule with the paper's network sizes and L_align sampling, for
accelerators and benchmarks), and the ablation's `full`, `no_joint`, `no_isa`, `regression`,
`partial_shapes` and `partial_shapes_no_align` (jobs/ablation.py), e.g.
  python -m scenediff_jax.main --config=configs/synthetic.py:smoke --workdir=/tmp/smoke
  python -m scenediff_jax.main --config=configs/synthetic.py --mode=ablate --workdir=runs/ablation
"""
import ml_collections

from data_pipelines.registry import default_data_dir
from scenediff_jax import cli
from scenediff_jax.jobs import ablation


def get_config(variant: str = 'default') -> ml_collections.ConfigDict:
  if variant in ablation.VARIANTS:
    return ablation.variant(get_config('default'), variant)
  if variant == 'paper_recipe':
    config = get_config('default')
    use_paper_recipe(config)
    config.name = 'synthetic_paper_recipe'
    return config
  if variant not in ('default', 'smoke', 'paper'):
    raise ValueError(f'Unknown variant {variant!r} of configs/synthetic.py; use default, smoke, '
                     'paper, paper_recipe or an ablation variant '
                     f'({", ".join(ablation.VARIANTS)}).')
  config = ml_collections.ConfigDict()
  config.name = f'synthetic_{variant}'
  config.data_dir = default_data_dir()  # where TFDS data lives
  # JAX's persistent compilation cache: a restart, an eval or predict finds the programs an
  # earlier run compiled. '' turns it off; JAX_COMPILATION_CACHE_DIR, if set, wins.
  config.compilation_cache_dir = cli.default_compilation_cache_dir()

  config.data = ml_collections.ConfigDict()
  config.data.name = 'synth_rooms'
  config.data.size = 'default'  # SynthRooms builder config
  config.data.seed = 0  # generation seed: every scene and shape follows from it
  config.data.shape_name = 'synth_shapes'  # canonical shapes of the same objects

  # The shape autoencoder (SPAGHETTI-style parts); the paper's sizes are code 256, 16 parts,
  # 512-d intrinsics: smaller here so that it trains on a laptop CPU. Measured side by side
  # on held-out shapes at the default budget (docs/shape_autoencoder_eval.md): queries that
  # also read their distance to each part (`part_distances`), no similarity augmentation and
  # learning rate 2e-3 took the F-score from 59 to 87 (InstPIFu convention, 64³); inside /
  # outside balancing and more near-surface queries scored lower on top of them.
  config.shape_model = ml_collections.ConfigDict(dict(
      code_size=256, num_parts=16,
      intrinsic_size=64, width=128, num_heads=4,
      decoder_depth=2, decoder_frequencies=6, part_distances=True))
  config.shape_training = ml_collections.ConfigDict(dict(
      steps=600, batch_size=16, learning_rate=2e-3,
      weight_decay=1e-4, surface_points=2048,
      occupancy_points=1024, points_per_gaussian=64,
      surface_weight=10.0,
      augment_probability=0.0,  # share of shapes moved by a random similarity (SPAGHETTI)
      near_surface_share=-1.0,  # share of queries near the surface; < 0: as stored (half)
      balanced_bce=False,  # inside and outside queries weighted alike
      log_every=50,
      checkpoint_every=500, seed=0))
  config.shape_eval = ml_collections.ConfigDict(dict(
      num_shapes=150, mesh_resolution=128,  # 150: every test shape
      coarse_resolution=32, num_previews=6,
      compare_dense=False))  # also mesh densely: does coarse-to-fine give the same mesh?

  # The scene diffusion (PAPER.md "Conditioning" to "Losses"). Paper sizes: ResNet-34 with
  # 4 stages, 8×8×256 ROIs, 512-wide feature CNN, pose UNet widths up to 1024 with 8 heads
  # × 64; here small enough to train on a 2-core CPU in minutes.
  # Device mesh (training/sharding.py): ('data', -1) uses every device for data parallelism;
  # add ('model', k) to shard the large parameters k ways, e.g. (('data', -1), ('model', 2)).
  config.mesh = (('data', -1),)
  config.method = 'diffusion'  # 'regression': the ablation's one-pass x₀ predictor
  config.max_objects = 16  # N_max: scene elements are padded to this many objects
  config.image_encoder = ml_collections.ConfigDict(dict(
      resnet_depth=18, base_width=16, num_stages=3,
      roi_size=8, roi_channels=32,
      feature_width=32, condition_size=64,
      box_frequencies=10,
      norm='group',  # 'frozen_batch' for torchvision weights (training.backbone_weights)
      # PAPER.md is silent on the layout's condition: the whole image and the camera
      # (image_encoder.py).
      layout_from_image=True))
  config.denoiser = ml_collections.ConfigDict(dict(
      pose_widths=(64, 64, 128, 128), num_heads=4,
      head_dim=16, use_isa=True, shape_width=64,
      shape_heads=4, gaussian_layers=(1, 2),
      intrinsic_layers=(1, 2), time_frequencies=64))
  # The recipe (docs/recipe.md: each choice measured side by side on validation scenes,
  # 600 + 100 steps): the denoiser predicts x₀ with the loss weight over t clamped to
  # [1, γ] in x₀ units, on the paper's linear schedule. Against the paper's recipe
  # (`paper_recipe`: ε, plain ε-MSE) one sample scored IoU3D 16.2 / AP3D@15 25.8 against
  # 9.3 / 10.0; v-prediction, the cosine schedule and per-part latent statistics each
  # scored lower on top of it.
  config.diffusion = ml_collections.ConfigDict(dict(
      num_timesteps=1000, beta_start=1e-4, beta_end=0.02,
      schedule='linear',  # or 'cosine' (diffusion/schedule.py)
      # What the denoiser outputs: 'eps', 'x0' or 'v' (diffusion/parametrization.py).
      prediction='x0',
      # Per-scene loss weight over t, in x₀ units (diffusion/weighting.py): 'none' (the
      # prediction's own MSE), 'min_snr' (min(SNR, γ)) or 'clamped_snr' (clip(SNR, 1, γ)).
      loss_weighting='clamped_snr', snr_gamma=5.0,
      # DDIM steps, η and guidance at evaluation and prediction, chosen on the validation
      # scenes (docs/recipe.md): 10 steps with η = 1 and guidance 1.5 (one sample: AP3D@15
      # 30.6 against 25.8 with 25 steps and no guidance; guidance 2 and 3 scored lower). The
      # real-data configs keep the paper's DDIM 100, η = 0, no guidance.
      sampling_steps=10,
      eta=1.0, guidance_scale=1.5,  # 1.0: no classifier-free guidance
      clip_x0=4.0,  # DDIM clips x̂₀ to ± this (normalised units); 0 turns it off
      condition_drop=0.1))  # share of training scenes that see the null condition
  # Stages: the shape autoencoder (config.shape_training), then scene diffusion for
  # `diffusion_steps`, then `joint_steps` more with λ·L_align added.
  config.training = ml_collections.ConfigDict(dict(
      batch_size=16, learning_rate=5e-4, weight_decay=1e-4, grad_clip=1.0,
      warmup_steps=100, diffusion_steps=1600,
      joint_steps=300, align_weight=0.01, ema_decay=0.995,
      align_clip=4.0,  # x̂₀ in L_align is clipped to ± this (normalised units)
      align_weighting='uniform',  # per-scene L_align weight: 'uniform', or 'signal' (ᾱ_t)
      # Shape latents normalised per channel over all parts ('channel') or per (part,
      # channel) ('part'): training/scene_data.latent_statistics.
      latent_normalization='channel',
      depth_points=256,  # ground-truth depth points per object for L_align
      align_points_per_gaussian=16,  # x̂₀ samples per Gaussian for L_align
      statistics_scenes=1000,  # training scenes that fix the normalisation statistics
      shape_fraction=1.0,  # share of training scenes with shape ground truth (the rest: depth only)
      backbone_weights='',  # a torchvision ResNet state_dict (.npz/.pth): models/resnet_weights.py
      # Matrix products and convolutions in 'float32' or 'bfloat16' (GPU/TPU configs);
      # parameters, optimizer state, L_align's distances and the losses stay float32.
      compute_dtype='float32',
      log_every=50, checkpoint_every=250, keep_checkpoints=3,
      seed=0))
  config.eval = ml_collections.ConfigDict(dict(
      split='test', num_scenes=0,  # 0: the whole split
      batch_size=50, use_ema=True, seed=0,
      tag='',  # results go to DIR/eval, or DIR/eval_TAG
      # 'true': the scenes' cameras (the paper's protocol); 'estimated': pitch and roll
      # estimated from each image (inference/gravity.py), as predict does for a photo.
      camera='true',
      # Samples per scene; K > 1 scores their consensus (inference/consensus.py: medoid box
      # per object, mean room box). On the held-out scenes K = 8 gave IoU3D 20.1 / AP3D 33.9 /
      # layout 47.3 against one sample's 17.7 / 27.7 / 41.1 (K = 16: 22.0 / 38.3 / 48.2).
      num_samples=8,
      # Objects whose meshes are extracted for CD / F-score: 100 give a standard error of
      # about 1.5 F-score points (report.md states it). 64³ and 128³ agree within a point
      # on held-out shapes (docs/shape_autoencoder_eval.md).
      mesh_objects=100,
      mesh_resolution=64, coarse_resolution=16,
      points_per_gaussian=256,  # surface samples for the L_align metric
      depth_points=1000,  # ground-truth depth points per object for the L_align metric
      num_previews=8))

  # `--mode=ablate` (jobs/ablation.py): every variant with this budget, scored on the
  # first `eval_scenes` test scenes; partial_shapes* keep shapes for `shape_fraction` of the
  # training scenes. The default budget is the default run's.
  config.ablation = ml_collections.ConfigDict(dict(
      diffusion_steps=config.training.diffusion_steps, joint_steps=config.training.joint_steps,
      eval_scenes=250, shape_fraction=0.1,
      variants=ablation.VARIANTS))

  config.preview = ml_collections.ConfigDict()
  config.preview.split = 'train'
  config.preview.num_scenes = 8

  if variant == 'smoke':
    use_smoke_sizes(config)
  if variant == 'paper':
    use_paper_sizes(config)
  return config


def use_smoke_sizes(config: ml_collections.ConfigDict) -> None:
  """`smoke`: tiny data, networks and budgets, so that every mode runs in seconds (the tests')."""
  config.data.size = 'tiny'
  config.shape_model.update(code_size=64, num_parts=4, intrinsic_size=16, width=32, num_heads=2,
                            decoder_depth=1)
  config.shape_training.update(steps=20, batch_size=4, surface_points=512, occupancy_points=512,
                               points_per_gaussian=16, log_every=5, checkpoint_every=10)
  config.shape_eval.update(num_shapes=4, mesh_resolution=32, coarse_resolution=8, num_previews=2)
  config.image_encoder.update(base_width=8, num_stages=2, roi_size=4, roi_channels=16,
                              feature_width=16, condition_size=32)
  config.denoiser.update(pose_widths=(32, 32), num_heads=2, head_dim=8, shape_width=32,
                         shape_heads=2, gaussian_layers=(1, 1), intrinsic_layers=(1, 1),
                         time_frequencies=32)
  config.training.update(batch_size=4, warmup_steps=5, diffusion_steps=20, joint_steps=6,
                         depth_points=64, align_points_per_gaussian=4, log_every=5,
                         checkpoint_every=10)
  config.eval.update(num_scenes=8, batch_size=8, num_samples=2, mesh_objects=4, mesh_resolution=32,
                     coarse_resolution=8, points_per_gaussian=64, num_previews=2)
  config.ablation.update(diffusion_steps=config.training.diffusion_steps,
                         joint_steps=config.training.joint_steps, eval_scenes=4,
                         shape_fraction=0.5)
  config.preview.num_scenes = 4


def use_paper_sizes(config: ml_collections.ConfigDict) -> None:
  """The paper's networks (PAPER.md "Representation" to "Losses"): SPAGHETTI-size codes (16
  Gaussians, 512-d intrinsics), ResNet-34 with 8×8×256 ROIs and a 512-wide feature CNN, the
  8-level pose UNet with 8 heads × 64, shape stages of 2 + 6 and 6 + 6 layers, and L_align
  with 1,000 points per Gaussian."""
  config.shape_model.update(code_size=256, num_parts=16, intrinsic_size=512, width=256,
                            num_heads=4, decoder_depth=2)
  config.image_encoder.update(resnet_depth=34, base_width=64, num_stages=4, roi_size=8,
                              roi_channels=256, feature_width=512, condition_size=512)
  config.denoiser.update(pose_widths=(256, 256, 512, 512, 512, 512, 1024, 1024), num_heads=8,
                         head_dim=64, shape_width=256, shape_heads=4, gaussian_layers=(2, 6),
                         intrinsic_layers=(6, 6), time_frequencies=128)
  config.training.update(depth_points=2000, align_points_per_gaussian=1000)


def use_paper_recipe(config: ml_collections.ConfigDict) -> None:
  """The paper's diffusion recipe (PAPER.md "Diffusion" and "Losses"): ε-prediction on the
  linear β schedule with uniform t and the plain ε-MSE, shape latents normalised per channel,
  L_align on every timestep alike, 10% condition dropout and no guidance (docs/recipe.md)."""
  config.diffusion.update(prediction='eps', schedule='linear', loss_weighting='none',
                          condition_drop=0.1, guidance_scale=1.0, eta=1.0)
  config.training.update(latent_normalization='channel', align_weighting='uniform')
