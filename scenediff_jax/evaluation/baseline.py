"""The trivial baseline of the evaluation report: class-mean boxes placed along 2D box rays.

"For honesty": every detection gets its class's mean size and yaw, and its centre sits at
the class's mean distance from the camera along the ray through its 2D box centre; the room
layout is the training set's mean layout box. Anything the model reports should beat this.
Priors are fitted on training records (world frame, DESIGN.md) and stored as JSON.
numpy only, like the rest of evaluation/.
"""
import dataclasses
import json

import numpy as np

from scenediff_jax.geometry.boxes import wrap_angle
from scenediff_jax.geometry.classes import CLASSES
from scenediff_jax.geometry.pose import pose_to_box


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous: compare fields
class ClassPriors:
  size: np.ndarray       # [C, 3] mean (w, h, d) per class
  yaw: np.ndarray        # [C] circular mean of yaw per class, in [−π, π)
  distance: np.ndarray   # [C] mean Euclidean distance of the box centre from the camera
  layout: np.ndarray     # [7] mean layout box (centre, size, circular-mean yaw)

  def to_json(self) -> str:
    return json.dumps({f.name: np.asarray(getattr(self, f.name)).tolist()
                       for f in dataclasses.fields(self)})

  @classmethod
  def from_json(cls, text: str) -> 'ClassPriors':
    fields = json.loads(text)
    return cls(**{f.name: np.asarray(fields[f.name], np.float64) for f in dataclasses.fields(cls)})


def circular_mean(angles, axis=None):
  """atan2(mean sin, mean cos), wrapped to [−π, π): 3.1 and −3.1 average to ±π, not 0."""
  angles = np.asarray(angles, np.float64)
  return wrap_angle(np.arctan2(np.sin(angles).mean(axis), np.cos(angles).mean(axis)))


def fit_priors(classes, boxes, layouts, num_classes: int = len(CLASSES)) -> ClassPriors:
  """Priors from training scenes: classes [n_i] int and boxes [n_i, 7] per scene, layouts [S, 7].

  A class never seen gets the mean over all objects, so that no prior is NaN.
  """
  classes = np.concatenate([np.asarray(c, int).reshape(-1) for c in classes] or [np.zeros(0, int)])
  boxes = np.concatenate([np.asarray(b, np.float64).reshape(-1, 7) for b in boxes]
                         or [np.zeros((0, 7))])
  layouts = np.asarray(layouts, np.float64).reshape(-1, 7)
  layouts = layouts[np.all(layouts[:, 3:6] > 0, -1)]  # all zeros: no room box (Pix3D)
  if len(classes) != len(boxes):
    raise ValueError(f'{len(classes)} classes but {len(boxes)} boxes.')
  if not len(classes):
    raise ValueError('Priors need at least one object.')
  if classes.min() < 0 or classes.max() >= num_classes:
    raise ValueError(f'Classes must lie in [0, {num_classes}); '
                     f'got {classes.min()}..{classes.max()}.')
  distance = np.linalg.norm(boxes[:, :3], axis=-1)  # the camera centre is W's origin

  def means(rows):
    return boxes[rows, 3:6].mean(0), circular_mean(boxes[rows, 6]), distance[rows].mean()

  overall = means(np.arange(len(classes)))
  per_class = [means(classes == c) if np.any(classes == c) else overall for c in range(num_classes)]
  layout = (np.concatenate([layouts[:, :6].mean(0), [circular_mean(layouts[:, 6])]])
            if len(layouts) else np.zeros(7))
  return ClassPriors(size=np.stack([p[0] for p in per_class]),
                     yaw=np.array([p[1] for p in per_class]),
                     distance=np.array([p[2] for p in per_class]), layout=layout)


def predict_boxes(priors: ClassPriors, classes, bbox2d, K, world_to_cam) -> np.ndarray:
  """Boxes [n, 7] for detections (classes [n], bbox2d [n, 4] pixels) seen by K, world_to_cam."""
  classes = np.asarray(classes, int).reshape(-1)
  bbox2d = np.asarray(bbox2d, np.float64).reshape(-1, 4)
  # A pose with δ = 0 puts the centre on the 2D box centre's ray: the same conventions as
  # the model's poses, so the image size never matters.
  poses = np.concatenate([np.zeros((len(classes), 2)), priors.distance[classes, None],
                          priors.size[classes], priors.yaw[classes, None]], -1)
  return pose_to_box(poses, bbox2d, np.asarray(K, np.float64),
                     np.asarray(world_to_cam, np.float64), np.ones(2))


def predict_scene(priors: ClassPriors, classes, bbox2d, K, world_to_cam) -> dict:
  """A prediction in the evaluator's format (every detection scored 1)."""
  classes = np.asarray(classes, int).reshape(-1)
  return {'objects': {'class': classes,
                      'box3d': predict_boxes(priors, classes, bbox2d, K, world_to_cam),
                      'score': np.ones(len(classes))},
          'layout': np.array(priors.layout, np.float64)}
