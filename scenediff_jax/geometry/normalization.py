"""The normalisation records a trained model carries: per-field statistics that map pose
vectors to about [−1, 1] (`Statistics`), those of every diffused quantity with the model's
image size (`SceneStatistics`, a workdir's statistics.json), and the shape autoencoder's code
of every shape (`ShapeLatents`, shape_latents.npz). Training writes them; inference reads them.

The paper normalises each pose field with a mean and a scale (e.g. distance: μ = 2.7,
max = 2.5). We compute them from the training split (mean, and the largest deviation from
it, so that training data lands in [−1, 1]) and store them next to the checkpoint as JSON.
Yaw is periodic, so it keeps μ = 0 and scale = π.
"""
import dataclasses
import json

import numpy as np

from scenediff_jax.geometry.backend import namespace


@dataclasses.dataclass(frozen=True)
class Statistics:
  mean: np.ndarray
  scale: np.ndarray

  def normalize(self, x):
    xp = namespace(x)
    return (x - xp.asarray(self.mean, x.dtype)) / xp.asarray(self.scale, x.dtype)

  def denormalize(self, x):
    xp = namespace(x)
    return x * xp.asarray(self.scale, x.dtype) + xp.asarray(self.mean, x.dtype)

  def to_json(self) -> str:
    return json.dumps({'mean': self.mean.tolist(), 'scale': self.scale.tolist()})

  @classmethod
  def from_json(cls, text: str) -> 'Statistics':
    d = json.loads(text)
    return cls(np.asarray(d['mean'], np.float64), np.asarray(d['scale'], np.float64))


def compute_statistics(vectors, periodic_fields=(6,), min_scale=1e-3, quantile=1.0,
                       periodic_scale=np.pi, robust=False) -> Statistics:
  """Statistics of vectors [N, F]; `periodic_fields` are angles in [−π, π) (μ = 0, scale =
  `periodic_scale`).

  The scale is the `quantile` of |x − μ| (1.0: the largest deviation). A lower quantile keeps
  heavy-tailed fields usable: δ of an object whose centre is near the camera plane projects
  dozens of image sizes away and would squeeze every other δ to ~0 under the maximum.
  With `robust`, μ is the median (those outliers shift the mean by most of a typical δ).
  """
  vectors = np.asarray(vectors, np.float64)
  if vectors.ndim != 2 or len(vectors) == 0:
    raise ValueError(f'Need a non-empty [N, F] array of vectors, got shape {vectors.shape}.')
  mean = np.median(vectors, 0) if robust else vectors.mean(0)
  scale = np.maximum(np.quantile(np.abs(vectors - mean), quantile, axis=0), min_scale)
  for f in periodic_fields:
    mean[f], scale[f] = 0.0, periodic_scale
  return Statistics(mean, scale)


@dataclasses.dataclass(frozen=True)
class SceneStatistics:
  """Normalisation of every diffused quantity, stored next to the checkpoints, and the
  training images' (height, width): the size the model takes (inference resizes to it).
  `shape_step`: the shape autoencoder checkpoint whose latents they were computed from
  (None in workdirs made before it was recorded)."""
  pose: Statistics
  layout: Statistics
  gaussians: Statistics
  intrinsics: Statistics
  image_size: tuple = None
  shape_step: int = None

  @property
  def latent_normalization(self) -> str:
    """'part' when the latents have statistics per (part, channel), else 'channel'."""
    return 'part' if np.ndim(self.gaussians.mean) == 2 else 'channel'

  def to_json(self) -> str:
    fields = {k: json.loads(getattr(self, k).to_json())
              for k in ('pose', 'layout', 'gaussians', 'intrinsics')}
    return json.dumps({**fields, 'image_size': self.image_size and list(self.image_size),
                       'shape_step': self.shape_step}, indent=2)

  @classmethod
  def from_json(cls, text: str) -> 'SceneStatistics':
    d = json.loads(text)
    image_size = d.pop('image_size', None)  # absent from workdirs made before it existed
    shape_step = d.pop('shape_step', None)
    return cls(**{k: Statistics.from_json(json.dumps(v)) for k, v in d.items()},
               image_size=image_size and tuple(image_size), shape_step=shape_step)

  @classmethod
  def read(cls, path) -> 'SceneStatistics':
    """The statistics in the file `path`.

    Raises:
      FileNotFoundError: there is no such file.
      ValueError: it cannot be read as statistics (the message names the file and the cause).
    """
    try:
      with open(path) as f:
        return cls.from_json(f.read())
    except FileNotFoundError:
      raise
    except (OSError, ValueError, KeyError, TypeError) as error:
      raise ValueError(f'{path} cannot be read ({type(error).__name__}: {error})') from None


NO_STEP = -1  # shape_step of a latent table saved before the step was recorded


@dataclasses.dataclass(frozen=True)
class ShapeLatents:
  """The shape autoencoder's code of every shape: Gaussians [S, g, 16], intrinsics [S, g, d];
  `is_train` [S] marks training shapes (the only ones statistics may look at); `shape_step`
  the autoencoder checkpoint that encoded them (None: not recorded)."""
  shape_ids: np.ndarray
  gaussians: np.ndarray
  intrinsics: np.ndarray
  is_train: np.ndarray
  shape_step: int = None

  def rows(self, shape_ids):
    """Row of each shape id in the table, −1 where the shape is unknown (or the id is −1)."""
    lookup = np.full(max(int(self.shape_ids.max()), int(np.max(shape_ids, initial=0))) + 2, -1)
    lookup[self.shape_ids] = np.arange(len(self.shape_ids))
    return np.where(shape_ids >= 0, lookup[np.clip(shape_ids, 0, None)], -1)

  def save(self, path):
    fields = dataclasses.asdict(self)
    fields['shape_step'] = np.int64(NO_STEP if self.shape_step is None else self.shape_step)
    np.savez(path, **fields)

  @classmethod
  def load(cls, path) -> 'ShapeLatents':
    with np.load(path) as f:
      fields = {k: f[k] for k in f.files}
    step = int(fields.pop('shape_step', NO_STEP))
    return cls(**fields, shape_step=None if step == NO_STEP else step)
