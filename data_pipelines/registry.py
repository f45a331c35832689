"""Finds, builds and opens the datasets that configs name.

SynthRooms (`synth_rooms`, `synth_shapes`) is generated here. The real datasets (`sunrgbd`,
`pix3d`, `pix3d_shapes`) are converted from files the user already has, in the manual
directory that `config.data.manual_dir` (scenes) or `config.data.shape_manual_dir` (shapes)
names; code never downloads them.
"""
import os

from absl import logging
import tensorflow_datasets as tfds

# Imported for their registration with TFDS, and to build by name.
from data_pipelines.pix3d import builder as pix3d_builder
from data_pipelines.sunrgbd import builder as sunrgbd_builder
from data_pipelines.synth_rooms import builder as synth_rooms_builder

BUILDERS = {
    'synth_rooms': synth_rooms_builder.SynthRooms,
    'synth_shapes': synth_rooms_builder.SynthShapes,
    'sunrgbd': sunrgbd_builder.Sunrgbd,
    'pix3d': pix3d_builder.Pix3d,
    'pix3d_shapes': pix3d_builder.Pix3dShapes,
}
SYNTHETIC = ('synth_rooms', 'synth_shapes')


class DataMissing(RuntimeError):
  """A real dataset's files are not in its manual directory: the message says what to put where."""


class DataDamaged(DataMissing):
  """A built dataset lacks shard files or holds fewer bytes than it recorded."""


def default_data_dir() -> str:
  """Where TFDS data lives unless a config says otherwise: under the user's cache."""
  cache = os.environ.get('XDG_CACHE_HOME', os.path.join(os.path.expanduser('~'), '.cache'))
  return os.path.join(cache, 'scenediff_jax', 'tensorflow_datasets')


def get_builder(name: str, data_dir: str, size: str = 'default', seed: int = 0):
  if name not in BUILDERS:
    raise ValueError(f'Unknown dataset {name!r}; expected one of {sorted(BUILDERS)}.')
  if name in SYNTHETIC:
    config = synth_rooms_builder.builder_config(size, seed)
    if seed == 0:  # A registered config: TFDS wants it by name.
      config = config.name
  else:
    config = size
  return BUILDERS[name](config=config, data_dir=data_dir, file_format='array_record')


def build(name: str, data_dir: str, size: str = 'default', seed: int = 0, manual_dir: str = None):
  """Builds the dataset unless it is already there; returns its builder.

  Real datasets read `manual_dir`; `DataMissing` says what is missing there."""
  b = get_builder(name, data_dir, size, seed)
  if b.is_prepared():
    check_shards(b)
    logging.info('%s/%s is already built in %s.', name, b.builder_config.name, b.data_dir)
    return b
  download_config = None
  if name not in SYNTHETIC:
    check_manual_dir(name, manual_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir))
  logging.info('Building %s/%s into %s ...', name, b.builder_config.name, b.data_dir)
  b.download_and_prepare(download_config=download_config)
  return b


def check_shards(builder) -> None:
  """DataDamaged unless every shard file of every split is there with the bytes that
  dataset_info.json recorded (a copy cut short, a deleted shard)."""
  problems = []
  for split, info in builder.info.splits.items():
    paths = [os.fspath(p) for p in info.filepaths]
    missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
    if missing:
      problems.append(f'split {split} lacks {", ".join(missing)}')
      continue
    on_disk = sum(os.path.getsize(p) for p in paths)
    if info.num_bytes and on_disk != int(info.num_bytes):
      problems.append(f'split {split} holds {on_disk:,} bytes of the {int(info.num_bytes):,} '
                      f'recorded ({", ".join(os.path.basename(p) for p in paths)})')
  if problems:
    directory = os.fspath(builder.data_dir)
    raise DataDamaged(f'The {builder.name} dataset in {directory} is damaged: '
                      f'{"; ".join(problems)}. Delete {directory} and rerun (or run '
                      '--mode=build_data) to build it again.')


def check_manual_dir(name: str, manual_dir: str) -> None:
  """Raises DataMissing (with the builder's instructions) unless `manual_dir` has the files."""
  builder_class = BUILDERS[name]
  missing = builder_class.missing_files(os.path.expanduser(manual_dir or ''))
  if missing:
    raise DataMissing(
        f'The {name} dataset is not built yet and its manual directory {manual_dir!r} lacks '
        f'{", ".join(missing)}.\n{builder_class.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}')


def scene_builder(config, prepare: bool = True):
  """The builder of `config.data.name` (built first, when `prepare`)."""
  d = config.data
  if not prepare:
    return get_builder(d.name, config.data_dir, d.size, d.seed)
  return build(d.name, config.data_dir, d.size, d.seed, d.get('manual_dir'))


def shape_builder(config, prepare: bool = True):
  """The builder of `config.data.shape_name`, the canonical shapes (built first, when `prepare`)."""
  d = config.data
  if not prepare:
    return get_builder(d.shape_name, config.data_dir, d.size, d.seed)
  return build(d.shape_name, config.data_dir, d.size, d.seed,
               d.get('shape_manual_dir', d.get('manual_dir')))


def split_source(config, builder, split: str):
  """The data source of `split` of the scene dataset: a built split (or a slice of one,
  'test[:100]'), or for SynthRooms 'validation', scenes drawn like the test ones but never
  built into it (data_pipelines/synth_rooms/validation.py; eval.num_scenes of them, 0 for
  the default count)."""
  if split == 'validation' and config.data.name == 'synth_rooms':
    from data_pipelines.synth_rooms import validation
    count = config.eval.get('num_scenes', 0) or validation.DEFAULT_COUNT
    return validation.ValidationScenes(builder.builder_config, count)
  return builder.as_data_source(split)


def splits_of(config, builder) -> tuple:
  """The splits `split_source` can open for `config`'s scene dataset."""
  extra = ('validation',) if config.data.name == 'synth_rooms' else ()
  return tuple(builder.info.splits) + extra


def check_available(config, shapes: bool = True) -> None:
  """DataMissing early (before a workdir is touched) when a real dataset can't be built, or
  DataDamaged when a built one lost files."""
  d = config.data
  wanted = [(d.name, d.get('manual_dir'))]
  if shapes and d.get('shape_name'):
    wanted.append((d.shape_name, d.get('shape_manual_dir', d.get('manual_dir'))))
  for name, manual_dir in wanted:
    builder = get_builder(name, config.data_dir, d.size, d.seed)
    if builder.is_prepared():
      check_shards(builder)
    elif name not in SYNTHETIC:
      check_manual_dir(name, manual_dir)


def true_mesh_fn(config):
  """shape_id → the ground-truth canonical trimesh of a shape of `config.data.shape_name`."""
  d = config.data
  if d.shape_name == 'synth_shapes':
    from data_pipelines.synth_rooms import shape_bank
    bank = synth_rooms_builder.builder_config(d.size, d.seed).scene.bank()
    return lambda shape_id: shape_bank.outer_mesh(bank.shape(shape_id))
  if d.shape_name == 'pix3d_shapes':
    return pix3d_builder.canonical_mesh_loader(
        os.path.expanduser(d.get('shape_manual_dir', d.get('manual_dir'))))
  raise ValueError(f'No ground-truth meshes for {d.shape_name!r}.')
