"""Intrinsics of a photo that came without cam_K.txt: from its EXIF, else a default field of view.

In order of preference:
  1. EXIF FocalLengthIn35mmFilm (what phones write): the focal length a 36 × 24 mm frame would
     need for the same field of view, judged on the diagonal (CIPA DC-008), so
     f_px = f₃₅ · (image diagonal in pixels) / 43.27 mm;
  2. EXIF FocalLength (mm) with the sensor's size from FocalPlaneXResolution and
     FocalPlaneResolutionUnit (pixels per inch, cm or mm of sensor): f_px = f_mm · pixels/mm;
  3. the default: SUN RGB-D's Kinect field of view, the camera our training data imitates
     (f = 529.5 px at 640 px wide: 62.3° across the longer side).
The principal point is the image centre; pixels are square.
"""
import math

from PIL import Image

from scenediff_jax.geometry import camera

FULL_FRAME_DIAGONAL = math.hypot(36.0, 24.0)  # mm, 43.27
DEFAULT_FOCAL_PER_WIDTH = 529.5 / 640  # SUN RGB-D's Kinect, as SynthRooms renders
DEFAULT_FOV_DEGREES = math.degrees(2 * math.atan(0.5 / DEFAULT_FOCAL_PER_WIDTH))  # 62.3

EXIF_IFD = 0x8769
FOCAL_LENGTH = 0x920A
FOCAL_LENGTH_35MM = 0xA405
FOCAL_PLANE_X_RESOLUTION = 0xA20E
FOCAL_PLANE_RESOLUTION_UNIT = 0xA210
MM_PER_UNIT = {2: 25.4, 3: 10.0, 4: 1.0}  # EXIF units: inch, centimetre, millimetre


def _positive(value):
  try:
    value = float(value)
  except (TypeError, ValueError, ZeroDivisionError):
    return None
  return value if math.isfinite(value) and value > 0 else None


def exif_focal_length(exif, width, height):
  """(focal length in pixels, where it came from), or None when the EXIF cannot say.

  Args:
    exif: a PIL.Image.Exif (Image.getexif()).
    width, height: of the image as stored, pixels.
  """
  tags = dict(exif.get_ifd(EXIF_IFD)) if exif else {}
  f35 = _positive(tags.get(FOCAL_LENGTH_35MM))
  if f35:
    return f35 * math.hypot(width, height) / FULL_FRAME_DIAGONAL, (
        f'EXIF FocalLengthIn35mmFilm = {f35:g} mm')
  focal_mm = _positive(tags.get(FOCAL_LENGTH))
  per_unit = _positive(tags.get(FOCAL_PLANE_X_RESOLUTION))
  unit = MM_PER_UNIT.get(tags.get(FOCAL_PLANE_RESOLUTION_UNIT, 2))  # EXIF's default: inches
  if focal_mm and per_unit and unit:
    # Pixels of the image as taken per unit of sensor (a resized copy that kept the tag gets
    # the focal length of the original; FocalLengthIn35mmFilm has no such trap).
    return focal_mm * per_unit / unit, (
        f'EXIF FocalLength = {focal_mm:g} mm on a sensor of {per_unit / unit:g} px/mm')
  return None


def photo_intrinsics(path, width, height):
  """(3×3 K, where it came from: a sentence) of the image file at `path`."""
  try:
    with Image.open(path) as image:
      found = exif_focal_length(image.getexif(), width, height)
  except (OSError, ValueError, SyntaxError, TypeError):  # EXIF Pillow cannot parse: none
    found = None
  if found is None:
    found = (DEFAULT_FOCAL_PER_WIDTH * max(width, height),
             f'no cam_K.txt and no EXIF focal length: the default field of view, '
             f'{DEFAULT_FOV_DEGREES:.1f}° across the longer side (SUN RGB-D\'s Kinect)')
  focal, source = found
  return camera.intrinsics(focal, (width - 1) / 2, (height - 1) / 2), source
