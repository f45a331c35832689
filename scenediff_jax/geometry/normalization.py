"""Per-field normalisation statistics that map pose vectors to about [−1, 1].

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
