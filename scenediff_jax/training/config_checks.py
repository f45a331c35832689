"""Config values that cannot work, refused before any data is built or any step runs: each
error names the `--config.FIELD` and what to give instead."""


class ConfigError(ValueError):
  """A config field has a value that cannot work."""


# (field, smallest value): counts and intervals the training and evaluation loops divide by,
# index with or loop over. Fields a config lacks (another dataset's config) are skipped.
MINIMUM = (
    ('max_objects', 1),
    ('shape_training.steps', 1), ('shape_training.batch_size', 1),
    ('shape_training.log_every', 1), ('shape_training.checkpoint_every', 1),
    ('shape_training.surface_points', 1), ('shape_training.occupancy_points', 1),
    ('training.batch_size', 1), ('training.diffusion_steps', 1), ('training.joint_steps', 0),
    ('training.warmup_steps', 0), ('training.log_every', 1), ('training.checkpoint_every', 1),
    ('training.keep_checkpoints', 1), ('training.statistics_scenes', 1),
    ('diffusion.num_timesteps', 1), ('diffusion.sampling_steps', 1),
    ('eval.batch_size', 1), ('eval.num_samples', 1), ('eval.num_scenes', 0),
    ('eval.mesh_objects', 0), ('eval.num_previews', 0), ('eval.mesh_resolution', 1),
    ('eval.coarse_resolution', 1),
    ('shape_eval.num_shapes', 0), ('shape_eval.mesh_resolution', 1),
    ('shape_eval.coarse_resolution', 1),
)
POSITIVE = ('training.learning_rate', 'shape_training.learning_rate', 'diffusion.snr_gamma')
# (field, allowed values) of the recipe's choices (checked where a config has the field).
CHOICES = (
    ('method', ('diffusion', 'regression')),
    ('diffusion.prediction', ('eps', 'x0', 'v')),
    ('diffusion.schedule', ('linear', 'cosine')),
    ('diffusion.loss_weighting', ('none', 'min_snr', 'clamped_snr')),
    ('training.align_weighting', ('uniform', 'signal')),
    ('training.latent_normalization', ('channel', 'part')),
    ('training.compute_dtype', ('float32', 'bfloat16')),
)


def _get(config, field):
  node = config
  for key in field.split('.'):
    if not hasattr(node, 'get') or key not in node:
      return None
    node = node[key]
  return node


def _check_resolution(config, group):
  fine = _get(config, f'{group}.mesh_resolution')
  coarse = _get(config, f'{group}.coarse_resolution')
  if fine is None or coarse is None:
    return
  ratio = fine // coarse
  if fine % coarse or ratio & (ratio - 1):
    raise ConfigError(f'--config.{group}.mesh_resolution={fine} must be the coarse resolution '
                      f'({coarse}) times a power of two, e.g. {coarse * 4}.')


def check(config) -> None:
  """ConfigError for the first field whose value cannot work."""
  for field, smallest in MINIMUM:
    value = _get(config, field)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, int):
      raise ConfigError(f'--config.{field}={value!r}: give a whole number.')
    if value < smallest:
      which = 'a positive' if smallest else 'a non-negative'
      raise ConfigError(f'--config.{field}={value}: give {which} number.')
  for field in POSITIVE:
    value = _get(config, field)
    if value is not None and not value > 0:
      raise ConfigError(f'--config.{field}={value}: give a positive number.')
  for field, allowed in CHOICES:
    value = _get(config, field)
    if value is not None and value not in allowed:
      raise ConfigError(f'--config.{field}={value!r}: give one of {", ".join(allowed)}.')
  d = config.get('diffusion')
  if d is not None and d.get('sampling_steps', 1) > d.get('num_timesteps', 1):
    raise ConfigError(f'--config.diffusion.sampling_steps={d.sampling_steps} is more than the '
                      f'{d.num_timesteps} timesteps; give at most that many.')
  for group in ('eval', 'shape_eval'):
    _check_resolution(config, group)


def check_devices(config, device_count: int, data_axis: int) -> None:
  """ConfigError when a training batch does not split evenly over the devices: the shape
  stage spreads its batch over all `device_count` devices, the scene stages over the mesh's
  `data_axis` devices."""
  for field, ways, what in (('shape_training.batch_size', device_count, 'devices'),
                            ('training.batch_size', data_axis, "devices of the mesh's data axis")):
    value = _get(config, field)
    if value is not None and value % ways:
      raise ConfigError(f'--config.{field}={value} does not split over the {ways} {what}: '
                        f'give a multiple of {ways}, e.g. '
                        f'--config.{field}={ways * -(-value // ways)}.')


def check_split(config, splits) -> None:
  """ConfigError unless config.eval.split is one of the dataset's `splits`."""
  split = config.eval.split
  if split.split('[')[0] not in splits:  # 'test[:100]': a slice of a split
    raise ConfigError(f'--config.eval.split={split!r} is not a split of {config.data.name} '
                      f'(it has {", ".join(sorted(splits))}).')
