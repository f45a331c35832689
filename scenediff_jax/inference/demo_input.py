"""Reads and validates one input folder in the Total3D/Im3D demo format, for `predict`.

A demo folder holds
  img.jpg          the RGB image (img.jpeg, img.png or any single img.* Pillow reads also do);
  detections.json  a JSON list of {"bbox": [x1, y1, x2, y2], "class": NYU-40 name,
                   optional "score" (default 1.0), optional "mask" (ignored)};
  cam_K.txt        optional: the 3×3 intrinsics, three rows of whitespace-separated numbers,
                   pixels. Without it K comes from the photo's EXIF or a default field of view
                   (inference/intrinsics.py), with one warning saying which.

The camera's pitch and roll come from --pitch/--roll when given; otherwise, with camera
'auto', they are estimated from the image (inference/gravity.py) and a level camera is
assumed, with a warning, when the estimate is not reliable; with camera 'level' they are 0.
`DemoInput.camera` says where K, pitch and roll came from (predict writes it to boxes.json).

Pixel convention (DESIGN.md, OpenCV): pixel centres sit at integer coordinates, and a box
[x1, y1, x2, y2] passes through the centres of its extreme pixels (as SynthRooms' bbox2d
does), so its continuous extent is [x1 - 0.5, x2 + 0.5]. Resizing by s maps a continuous
coordinate u to (u + 0.5)·s - 0.5 (as `camera.scale_intrinsics` does for K), hence a box
becomes [x1·s, (x2 + 1)·s - 1]: the whole image stays the whole image.

Mistakes the user can fix raise `InputError`, whose message is one line naming the file.
Per-detection problems that have an obvious repair are repaired with one warning per kind:
unsupported classes are skipped, boxes are clipped to the image (or dropped when inverted,
empty or outside it), and only the `max_objects` highest scores are kept. NaN or inf in a
detection is an error, not a repair: it means the detector output is corrupt.

NYU-40 class names → our classes (geometry.classes.CLASSES). Names match case-insensitively,
with spaces and hyphens read as underscores ("Night Stand" == "night_stand"):

  NYU-40 name   our class
  bed           bed
  chair         chair
  sofa          sofa
  table         table
  desk          desk
  dresser       dresser
  night_stand   nightstand
  nightstand    nightstand   (the spelling SUN RGB-D and our own class list use)
  sink          sink
  cabinet       cabinet
  lamp          lamp
  bookshelf     cabinet
  shelves       cabinet

bookshelf and shelves become cabinet by our own decision: they are storage furniture with the
same upright box-like extent as a cabinet, and a cabinet box is a far better 3D prior for
them than nothing. Every other NYU-40 class (wall, floor, door, window, picture, counter,
blinds, curtain, pillow, mirror, floor_mat, clothes, ceiling, books, refridgerator,
television, paper, towel, shower_curtain, box, whiteboard, person, toilet, bathtub, bag,
otherstructure, otherfurniture, otherprop) has no close counterpart among our classes and is
skipped; e.g. counter is not a table (built-in, other height and depth statistics).
"""
import collections
import dataclasses
import json
import math
import numbers
import os

from absl import logging
import numpy as np
from PIL import Image

from scenediff_jax.geometry import camera
from scenediff_jax.geometry.classes import CLASSES
from scenediff_jax.inference import gravity, intrinsics

IMAGE_NAMES = ('img.jpg', 'img.jpeg', 'img.png')  # preferred, in this order
K_NAME = 'cam_K.txt'
DETECTIONS_NAME = 'detections.json'
FOLDER_CONTENTS = ('a demo folder holds img.jpg (or img.png), detections.json (a list of '
                   '{"bbox": [x1, y1, x2, y2], "class": NYU-40 name}) and optionally cam_K.txt '
                   '(3×3 intrinsics)')
CAMERA_MODES = ('auto', 'level')  # pitch and roll not given: estimated from the image, or 0

NYU40_TO_CLASS = {
    'bed': 'bed',
    'chair': 'chair',
    'sofa': 'sofa',
    'table': 'table',
    'desk': 'desk',
    'dresser': 'dresser',
    'night_stand': 'nightstand',
    'nightstand': 'nightstand',
    'sink': 'sink',
    'cabinet': 'cabinet',
    'lamp': 'lamp',
    'bookshelf': 'cabinet',  # storage furniture of a cabinet's extent: see the docstring
    'shelves': 'cabinet',
}
_MAX_LISTED = 20  # indices listed in one warning before "… and N more"


class InputError(ValueError):
  """A problem with the user's input; str(e) is ONE line saying what is wrong and how to fix it
  (always name the offending file)."""

  def __init__(self, message):
    # One line whatever was interpolated (paths, PIL or JSON messages).
    super().__init__(' '.join(str(message).splitlines()))


@dataclasses.dataclass
class DemoInput:
  name: str                    # folder basename
  image: np.ndarray            # uint8 [H, W, 3] resized to the model's image_size
  K: np.ndarray                # float32 [3, 3] rescaled to the resized image
  world_to_cam: np.ndarray     # float32 [3, 3] from pitch/roll
  bbox2d: np.ndarray           # float32 [n, 4] in resized-image pixels
  classes: np.ndarray          # int32 [n] indices into CLASSES
  scores: np.ndarray           # float32 [n]
  original_image: np.ndarray   # uint8 [H0, W0, 3] as read (RGB)
  original_K: np.ndarray       # float32 [3, 3] as read
  original_bbox2d: np.ndarray  # float32 [n, 4] after clipping, in original pixels
  notes: list                  # human-readable notes/warnings that were also logged
  camera: dict = dataclasses.field(default_factory=dict)  # where K, pitch and roll came from


def normalize_class_name(name):
  """'Night Stand' / 'night-stand' → 'night_stand'."""
  return '_'.join(str(name).strip().lower().replace('-', ' ').replace('_', ' ').split())


def is_demo_folder(path) -> bool:
  """True when path holds detections.json (it and the image are checked on reading)."""
  return os.path.isfile(os.path.join(path, DETECTIONS_NAME))


def find_inputs(path) -> list:
  """`path` itself when it is a demo folder, else its immediate subfolders that are (sorted)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise InputError(f'{path}: no such file or directory; pass a demo folder or a folder of '
                     f'demo folders ({FOLDER_CONTENTS})')
  if not os.path.isdir(path):
    raise InputError(f'{path}: is a file, not a folder; pass the folder that holds it '
                     f'({FOLDER_CONTENTS})')
  if is_demo_folder(path):
    return [path]
  found = sorted(os.path.join(path, name) for name in os.listdir(path)
                 if os.path.isdir(os.path.join(path, name))
                 and is_demo_folder(os.path.join(path, name)))
  if not found:
    raise InputError(f'{path}: neither it nor any folder directly inside it is a demo folder; '
                     f'{FOLDER_CONTENTS}')
  return found


def _listed(indices):
  indices = [int(i) for i in indices]
  shown = ', '.join(str(i) for i in indices[:_MAX_LISTED])
  more = len(indices) - _MAX_LISTED
  return shown + (f' and {more} more' if more > 0 else '')


def _note(notes, message, warning=True):
  notes.append(message)
  (logging.warning if warning else logging.info)('%s', message)


def _image_path(folder, notes):
  files = sorted(f for f in os.listdir(folder)
                 if f.lower().startswith('img.') and os.path.isfile(os.path.join(folder, f)))
  by_lower = {f.lower(): f for f in files}
  preferred = [by_lower[n] for n in IMAGE_NAMES if n in by_lower]
  if preferred:
    chosen = preferred[0]
  elif len(files) == 1:
    chosen = files[0]
  elif not files:
    raise InputError(f'{os.path.join(folder, "img.jpg")}: missing; put the input image in the '
                     f'folder as img.jpg or img.png')
  else:
    raise InputError(f'{os.path.join(folder, "img.*")}: several images ({", ".join(files)}) and '
                     f'none is img.jpg, img.jpeg or img.png; keep only the input image')
  if len(files) > 1:
    _note(notes, f'{os.path.join(folder, chosen)}: using this image and ignoring '
                 f'{", ".join(f for f in files if f != chosen)}')
  return os.path.join(folder, chosen)


def _to_rgb(img):
  """uint8 [H, W, 3] from any Pillow mode; 16-bit grayscale is scaled, not clipped."""
  if img.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N'):
    gray = np.asarray(img).astype(np.float64)
    if gray.max(initial=0) > 255:
      gray = gray / 257.0  # 16-bit range onto 8 bits
    gray = np.clip(np.round(gray), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, -1)
  return np.asarray(img.convert('RGB'), np.uint8)


def _read_image(path, notes):
  try:
    with Image.open(path) as img:
      img.load()  # Decodes now, so that truncated files fail here.
      orientation = img.getexif().get(0x0112, 1)
      rgb = _to_rgb(img)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise InputError(f'{path}: cannot read the image ({type(e).__name__}: {e}); replace it '
                     f'with a valid JPEG or PNG') from e
  if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
    raise InputError(f'{path}: the image is empty ({rgb.shape}); replace it with the input image')
  if orientation not in (1, None):
    # cam_K.txt and detections.json refer to the stored pixels, as in Total3D's demo.
    _note(notes, f'{path}: EXIF orientation {orientation} ignored; the image, cam_K.txt and '
                 f'detections.json are used as stored', warning=False)
  return rgb


def _read_K(path, image_shape, notes):
  fix = 'write three rows of three numbers: fx 0 cx / 0 fy cy / 0 0 1'
  try:
    with open(path, encoding='utf-8-sig') as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise InputError(f'{path}: cannot read it ({type(e).__name__}: {e}); {fix}') from e
  rows = []
  for line in text.splitlines():
    line = line.split('#', 1)[0].replace(',', ' ').strip()
    if not line:
      continue
    try:
      rows.append([float(x) for x in line.split()])
    except ValueError:
      raise InputError(f'{path}: {line[:60]!r} is not numbers; {fix}') from None
  if len(rows) != 3 or any(len(r) != 3 for r in rows):
    shape = ' + '.join(str(len(r)) for r in rows) or 'nothing'
    raise InputError(f'{path}: expected a 3×3 matrix, found {len(rows)} rows ({shape} numbers); '
                     f'{fix}')
  K = np.array(rows, np.float64)
  if not np.all(np.isfinite(K)):
    raise InputError(f'{path}: contains NaN or inf; {fix}')
  if K[0, 0] <= 0 or K[1, 1] <= 0:
    raise InputError(f'{path}: focal lengths fx = {K[0, 0]:g}, fy = {K[1, 1]:g} must be > 0 '
                     f'(pixels); {fix}')
  if np.max(np.abs(K[2] - [0, 0, 1])) > 1e-6:
    raise InputError(f'{path}: last row is {K[2].tolist()}, not [0, 0, 1] (is the matrix '
                     f'transposed?); {fix}')
  h0, w0 = image_shape
  if not (0 <= K[0, 2] <= w0 and 0 <= K[1, 2] <= h0):
    _note(notes, f'{path}: principal point ({K[0, 2]:g}, {K[1, 2]:g}) lies outside the '
                 f'{w0}×{h0} image; is K for another image size?')
  return K


def _finite_number(x):
  return (isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x))


def _read_detections(path):
  """(boxes float64 [n, 4], names [n] normalised, scores float64 [n]) as written."""
  fix = 'write a JSON list of {"bbox": [x1, y1, x2, y2], "class": NYU-40 name, "score": 0.9}'
  try:
    with open(path, encoding='utf-8-sig') as f:
      detections = json.load(f)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise InputError(f'{path}: not valid JSON ({e}); {fix}') from e
  except RecursionError:  # '[' * 100000: json recurses once per level
    raise InputError(f'{path}: nested too deeply to be detections; {fix}') from None
  if not isinstance(detections, list):
    raise InputError(f'{path}: the top level is a {type(detections).__name__}, not a list; {fix}')
  if not detections:
    raise InputError(f'{path}: the list is empty: nothing to reconstruct; add the detected '
                     f'objects ({fix})')
  boxes, names, scores = [], [], []
  for i, d in enumerate(detections):
    where = f'{path}: entry {i} (0-based)'
    if not isinstance(d, dict):
      raise InputError(f'{where} is a {type(d).__name__}, not an object; {fix}')
    for key in ('bbox', 'class'):
      if key not in d:
        raise InputError(f'{where} has no "{key}"; {fix}')
    bbox = d['bbox']
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and
            all(_finite_number(x) for x in bbox)):
      raise InputError(f'{where}: "bbox" is {json.dumps(bbox)[:80]}, not 4 finite numbers '
                       f'[x1, y1, x2, y2] in pixels (NaN or inf means the detector output is '
                       f'corrupt); {fix}')
    if not isinstance(d['class'], str):
      raise InputError(f'{where}: "class" is {json.dumps(d["class"])[:40]}, not a NYU-40 name; '
                       f'{fix}')
    score = d.get('score')
    if score is None:
      score = 1.0
    elif not _finite_number(score):
      raise InputError(f'{where}: "score" is {json.dumps(score)[:40]}, not a finite number '
                       f'(NaN or inf means the detector output is corrupt); {fix}')
    boxes.append([float(x) for x in bbox])
    names.append(normalize_class_name(d['class']))
    scores.append(float(score))
  return np.array(boxes, np.float64).reshape(-1, 4), names, np.array(scores, np.float64)


def _finite_angles(folder, pitch, roll):
  for name, value in (('pitch', pitch), ('roll', roll)):
    if value is not None and not math.isfinite(value):
      raise InputError(f'{folder}: camera {name} {value} (--{name}) is not finite; pass an '
                       'angle in radians')


def _world_to_cam(folder, image, K, pitch, roll, camera_mode, notes):
  """(R_wc, the record of where pitch and roll came from); the angles given are finite."""
  missing = [n for n, v in (('pitch', pitch), ('roll', roll)) if v is None]
  record = {}
  if missing and camera_mode == 'auto':
    estimate = gravity.estimate_gravity(image, K)
    record = {'confidence': round(estimate.confidence, 4),
              'vertical_lines': estimate.vertical_lines}
    if estimate.reliable:
      source = 'estimated from the image'
      _note(notes, f'{folder}: camera pitch {math.degrees(estimate.pitch):.1f}°, roll '
                   f'{math.degrees(estimate.roll):.1f}° estimated from the image (confidence '
                   f'{estimate.confidence:.2f}, {estimate.vertical_lines} vertical edges)',
            warning=False)
      pitch = estimate.pitch if pitch is None else pitch
      roll = estimate.roll if roll is None else roll
    else:
      source = f'level: the estimate from the image was not reliable ({estimate.reason})'
      _note(notes, f'{folder}: could not estimate the camera\'s pitch and roll from the image '
                   f'({estimate.reason}); assuming a level camera; pass '
                   f'{"/".join("--" + n for n in missing)} if you know them')
  elif missing:
    source = 'level (--camera=level)'
    _note(notes, f'{folder}: camera {"/".join(missing)} not given: assuming 0 (level camera); '
                 f'pass {"/".join("--" + n for n in missing)}', warning=False)
  else:
    source = 'given (--pitch, --roll)'
  given = [n for n in ('pitch', 'roll') if n not in missing]
  if missing and given:
    source += f'; {given[0]} given (--{given[0]})'
  pitch, roll = 0.0 if pitch is None else float(pitch), 0.0 if roll is None else float(roll)
  record = {'pitch_degrees': math.degrees(pitch), 'roll_degrees': math.degrees(roll),
            'pitch_roll_source': source, **record}
  return camera.world_to_cam(pitch, roll), record


def _intrinsics(folder, image_path, image_shape, notes):
  """(K of the stored image, where it came from)."""
  K_path = os.path.join(folder, K_NAME)
  if os.path.isfile(K_path):
    return _read_K(K_path, image_shape, notes), K_NAME
  h0, w0 = image_shape
  K, source = intrinsics.photo_intrinsics(image_path, w0, h0)
  _note(notes, f'{K_path}: missing; K from {source}: f = {K[0, 0]:.1f} px (write cam_K.txt '
               'if you know the intrinsics)')
  return K, source


def _scale_boxes(boxes, sx, sy):
  """Boxes through extreme pixel centres after resizing by (sx, sy): [x1·s, (x2 + 1)·s - 1]."""
  scale = np.array([sx, sy, sx, sy])
  return np.concatenate([boxes[:, :2], boxes[:, 2:] + 1], -1) * scale - [0, 0, 1, 1]


def read_demo_input(folder, image_size, max_objects, pitch=None, roll=None,
                    camera_mode='auto') -> DemoInput:
  """Reads, validates and repairs one demo folder; image, K and boxes resized to image_size.

  image_size: (H, W) of the model. pitch, roll: radians (camera.py's signs); None: estimated
  from the image with camera_mode 'auto', 0 with 'level'.
  Raises InputError for anything the user must fix.
  """
  folder = os.fspath(folder)
  height, width = (int(s) for s in image_size)
  if height < 1 or width < 1 or max_objects < 1:
    raise ValueError(f'image_size {image_size} and max_objects {max_objects} must be positive')
  if not os.path.isdir(folder):
    raise InputError(f'{folder}: not a folder; {FOLDER_CONTENTS}')
  if camera_mode not in CAMERA_MODES:
    raise ValueError(f'camera_mode {camera_mode!r} is not one of {CAMERA_MODES}')
  if not os.path.isfile(os.path.join(folder, DETECTIONS_NAME)):
    raise InputError(f'{os.path.join(folder, DETECTIONS_NAME)}: missing; {FOLDER_CONTENTS}')
  notes = []
  image_path = _image_path(folder, notes)
  original_image = _read_image(image_path, notes)
  h0, w0 = original_image.shape[:2]
  det_path = os.path.join(folder, DETECTIONS_NAME)
  _finite_angles(folder, pitch, roll)
  K0, K_source = _intrinsics(folder, image_path, (h0, w0), notes)
  boxes, names, scores = _read_detections(det_path)
  index = np.arange(len(names))  # entry numbers in detections.json, for the warnings

  # Unsupported classes: one warning with the distinct names and their counts.
  supported = np.array([n in NYU40_TO_CLASS for n in names], bool)
  if not supported.all():
    counts = collections.Counter(n for n, s in zip(names, supported) if not s)
    listed = ', '.join(f'{n} ×{c}' for n, c in sorted(counts.items(), key=lambda x: (-x[1], x[0])))
    _note(notes, f'{det_path}: skipped {int((~supported).sum())} detections of classes the model '
                 f'does not know: {listed} (supported NYU-40 names: '
                 f'{", ".join(NYU40_TO_CLASS)})')
  classes = np.array([CLASSES.index(NYU40_TO_CLASS[n]) if s else -1
                      for n, s in zip(names, supported)], np.int32)
  keep = supported

  # Boxes: drop the inverted and the wholly outside, clip the rest, drop the empty.
  x1, y1, x2, y2 = boxes.T
  inverted = keep & ((x2 < x1) | (y2 < y1))
  outside = keep & ~inverted & ((x2 < 0) | (y2 < 0) | (x1 > w0 - 1) | (y1 > h0 - 1))
  keep = keep & ~inverted & ~outside
  clipped_boxes = np.clip(boxes, 0, [w0 - 1, h0 - 1, w0 - 1, h0 - 1])
  cx1, cy1, cx2, cy2 = clipped_boxes.T
  empty = keep & ((cx2 <= cx1) | (cy2 <= cy1))
  keep = keep & ~empty
  clipped = keep & np.any(clipped_boxes != boxes, -1)  # the dropped are reported as dropped
  if clipped.any():
    _note(notes, f'{det_path}: clipped {int(clipped.sum())} boxes to the {w0}×{h0} image: '
                 f'entries {_listed(index[clipped])} (0-based)')
  dropped = [(what, mask) for what, mask in (('inverted (x2 < x1 or y2 < y1)', inverted),
                                             ('wholly outside the image', outside),
                                             ('zero area after clipping', empty)) if mask.any()]
  if dropped:
    _note(notes, f'{det_path}: dropped {sum(int(m.sum()) for _, m in dropped)} boxes: ' +
          '; '.join(f'{what}: entries {_listed(index[m])}' for what, m in dropped) +
          ' (0-based)')
  if not keep.any():
    raise InputError(f'{det_path}: none of the {len(names)} detections is usable (unsupported '
                     f'classes or boxes outside the {w0}×{h0} image): nothing to reconstruct; '
                     f'give boxes [x1, y1, x2, y2] in image pixels with classes among '
                     f'{", ".join(NYU40_TO_CLASS)}')

  # Too many: keep the highest scores (stable among ties), in their original order.
  kept = index[keep]
  if len(kept) > max_objects:
    order = np.argsort(-scores[kept], kind='stable')
    top = np.sort(kept[order[:max_objects]])
    cut = np.setdiff1d(kept, top)
    _note(notes, f'{det_path}: {len(kept)} usable detections but the model takes at most '
                 f'{max_objects}: kept the highest scores (>= {scores[top].min():g}), dropped '
                 f'entries {_listed(cut)} (0-based)')
    kept = top

  # The camera last: estimating it is the slow part, and bad detections should fail first.
  world_to_cam, camera_record = _world_to_cam(folder, original_image, K0, pitch, roll,
                                              camera_mode, notes)
  sx, sy = width / w0, height / h0
  if (h0, w0) == (height, width):
    image = original_image.copy()
  else:
    image = np.asarray(Image.fromarray(original_image).resize(
        (width, height), Image.Resampling.BILINEAR), np.uint8)
  return DemoInput(
      name=os.path.basename(os.path.normpath(folder)),
      image=image,
      K=camera.scale_intrinsics(K0, sx, sy).astype(np.float32),
      world_to_cam=np.asarray(world_to_cam, np.float32),
      bbox2d=_scale_boxes(clipped_boxes[kept], sx, sy).astype(np.float32),
      classes=classes[kept],
      scores=scores[kept].astype(np.float32),
      original_image=original_image,
      original_K=K0.astype(np.float32),
      original_bbox2d=clipped_boxes[kept].astype(np.float32),
      notes=notes,
      camera={'K_source': K_source, **camera_record},
  )


NYU40_SPELLING = {'nightstand': 'night_stand'}  # our class name → the NYU-40 spelling


def write_demo_folder(folder, record, size=None, extra_detections=()):
  """Writes a SynthRooms record as a demo folder (img.jpg, cam_K.txt, detections.json with
  NYU-40 class names), resized to `size` (H, W) if given: what predict reads, for trying
  the model on a generated scene. `extra_detections` are appended as they are."""
  os.makedirs(folder, exist_ok=True)
  height, width = record['image'].shape[:2]
  size = size or (height, width)
  sx, sy = size[1] / width, size[0] / height
  Image.fromarray(record['image']).resize(size[::-1], Image.Resampling.BILINEAR).save(
      os.path.join(folder, 'img.jpg'), quality=95)
  np.savetxt(os.path.join(folder, 'cam_K.txt'),
             camera.scale_intrinsics(np.asarray(record['K'], np.float64), sx, sy))
  boxes = np.asarray(record['objects']['bbox2d'], np.float64)
  detections = [{'bbox': _scale_boxes(box[None], sx, sy)[0].tolist(),
                 'class': NYU40_SPELLING.get(CLASSES[c], CLASSES[c]), 'score': 0.5 + 0.01 * k}
                for k, (box, c) in enumerate(zip(boxes, record['objects']['class']))]
  with open(os.path.join(folder, 'detections.json'), 'w') as f:
    json.dump(detections + list(extra_detections), f)
