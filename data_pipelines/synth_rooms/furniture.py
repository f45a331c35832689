"""Parametric furniture families for SynthRooms: random styled shapes built from solid parts.

Every style is a small builder that samples real-world dimensions (metres) from an rng and
returns parts in the object frame: y points down with the floor at y = 0 (the object lies at
y <= 0), x is the width, z the depth and the front faces -z. Builders speak in heights above
the floor (h0 < h1, both >= 0) and the helpers below turn them into y = -h. `make_shape`
normalises the union into the canonical box [-0.5, 0.5]^3 and keeps the size in metres.
"""
import dataclasses
import functools

import numpy as np

from data_pipelines.synth_rooms.parts import Part, box, cylinder, ellipsoid, normalize_to_unit_box
from scenediff_jax.geometry.classes import CLASSES

FRONT_T = 0.018  # how far drawer and door fronts stand proud of a carcass face


@dataclasses.dataclass(frozen=True)
class Shape:
  class_name: str
  style: str  # '<class>/<family>', e.g. 'chair/slatted_back'
  parts: tuple[Part, ...]  # canonical parts; their union exactly fills [-0.5, 0.5]^3
  size: np.ndarray  # nominal real-world extent (w, h, d) in metres, float64 [3]
  round_footprint: bool  # the footprint is round/elliptic by design (keep w ~ d when posing)


def blk(x0, x1, h0, h1, z0, z1) -> Part:
  """Box spanning x0..x1, heights h0..h1 above the floor and depth z0..z1."""
  return box((x0, -h1, z0), (x1, -h0, z1))


def slab(cx, cz, w, d, h0, h1) -> Part:
  """Box of footprint w x d centred at (cx, cz), between heights h0 and h1."""
  return blk(cx - w / 2, cx + w / 2, h0, h1, cz - d / 2, cz + d / 2)


def col(cx, cz, r, h0, h1, rz=None, taper=1.0) -> Part:
  """Vertical cylinder between heights h0 and h1; taper = top radius / bottom radius."""
  return cylinder((cx, cz), -h1, -h0, r, rz, taper)


def pair(p: Part) -> list[Part]:
  """The part and its mirror image across x = 0."""
  return [p, Part(p.kind, (-p.center[0],) + tuple(p.center[1:]), p.half, p.taper)]


def legs(w, d, h, t, inset=0.0, round_=False, mid=False, z=0.0) -> list[Part]:
  """Legs of thickness t from the floor up to height h at the corners of a w x d footprint
  centred at (0, z); `mid` adds a middle pair for long spans."""
  out = []
  for sx in (-1, 1, 0) if mid else (-1, 1):
    for sz in (-1, 1):
      cx, cz = sx * (w / 2 - inset - t / 2), z + sz * (d / 2 - inset - t / 2)
      out.append(col(cx, cz, t / 2, 0, h) if round_ else slab(cx, cz, t, t, 0, h))
  return out


def base(rng, kind, w, d, h, z=0.0) -> list[Part]:
  """What a w x d case at (0, z) stands on up to height h: 'plinth', 'legs' or 'bun' feet."""
  if kind == 'plinth':
    i = rng.uniform(0.02, 0.04)
    return [blk(-w / 2 + i, w / 2 - i, 0, h + 0.005, z - d / 2 + i, z + d / 2 - 0.005)]
  if kind == 'legs':
    return legs(w, d, h + 0.005, rng.uniform(0.035, 0.055), rng.uniform(0.0, 0.03),
                round_=rng.random() < 0.5, mid=w > 1.8, z=z)
  if kind == 'bun':
    r = rng.uniform(0.025, 0.045)
    return [col(sx * (w / 2 - r - 0.02), z + sz * (d / 2 - r - 0.02), r, 0, h + 0.005, taper=0.8)
            for sx in (-1, 1) for sz in (-1, 1)]
  raise ValueError(f'Unknown base {kind!r}.')


def handle(cx, hc, z_face, hw, hh, protrude) -> Part:
  """A handle of w x h = hw x hh centred at (cx, hc) on a face at z_face, sticking out to -z."""
  return blk(cx - hw / 2, cx + hw / 2, hc - hh / 2, hc + hh / 2, z_face - protrude, z_face + 0.002)


def fronts(rng, x0, x1, h0, h1, zf, rows) -> list[Part]:
  """Drawer and door fronts (with handles) on a carcass face at z = zf; the front is at -z.

  rows: (kind, columns, relative height) from the top; kind is 'drawer', 'door' or 'glass'
  (a door frame around a recessed panel).
  """
  knob, hp, gap = rng.random() < 0.4, rng.uniform(0.012, 0.02), 0.006
  weights = np.array([r[2] for r in rows], float)
  hs = h1 - np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum() * (h1 - h0)
  z0, out = zf - FRONT_T, []
  for (kind, ncol, _), top, bottom in zip(rows, hs[:-1], hs[1:]):
    lo, hi, xs = bottom + gap / 2, top - gap / 2, np.linspace(x0, x1, ncol + 1)
    for j in range(ncol):
      a, b = xs[j] + gap / 2, xs[j + 1] - gap / 2
      out.append(blk(a, b, lo, hi, z0 + (0.012 if kind == 'glass' else 0.0), zf + 0.005))
      if kind == 'glass':
        fw = min(0.06, (b - a) / 4, (hi - lo) / 4)
        out += [blk(a, a + fw, lo, hi, z0, zf), blk(b - fw, b, lo, hi, z0, zf),
                blk(a, b, lo, lo + fw, z0, zf), blk(a, b, hi - fw, hi, z0, zf)]
      if kind == 'drawer':
        hw, hh = (0.025, 0.025) if knob else (np.clip(0.35 * (b - a), 0.06, 0.18), 0.018)
        cxs = [a + (b - a) / 4, b - (b - a) / 4] if knob and b - a > 0.45 else [(a + b) / 2]
        out += [handle(cx, (lo + hi) / 2, z0, hw, hh, hp) for cx in cxs]
      else:  # doors: a vertical handle next to the meeting edge, about 1 m high on tall doors
        hl = 0.025 if knob else np.clip(0.25 * (hi - lo), 0.08, 0.3)
        hc = min(hi - 0.05 - hl / 2, max(1.0, lo + 0.05 + hl / 2))
        cx = a + 0.04 if ncol > 1 and j >= ncol / 2 else b - 0.04
        out.append(handle(cx, hc, z0, 0.025 if knob else 0.016, hl, hp))
  return out


def case(rng, w, h, d, base_kind, base_h, overhang=0.0):
  """A carcass with a top slab on a base; returns its parts and the front region for `fronts`."""
  tt, st = rng.uniform(0.02, 0.04), rng.uniform(0.015, 0.03)
  zf = -d / 2 + FRONT_T
  out = [blk(-w / 2, w / 2, base_h, h - tt, zf, d / 2),
         blk(-w / 2 - overhang, w / 2 + overhang, h - tt, h, -d / 2 - overhang, d / 2)]
  out += base(rng, base_kind, w, d, base_h)
  return out, (-w / 2 + st, w / 2 - st, base_h + st, h - tt - st, zf)


def open_case(rng, w, h, d, h0, shelves=0, drawer=0.0, kick=0.0) -> list[Part]:
  """Hollow case open at -z: top, bottom (raised by a recessed kick board), sides, back,
  `shelves` inner shelves and optionally a drawer of height `drawer` under the top."""
  t, bt = rng.uniform(0.015, 0.03), rng.uniform(0.01, 0.015)
  b0, inner_top = h0 + kick, h - t
  out = [blk(-w / 2, w / 2, h - t, h, -d / 2, d / 2), blk(-w / 2, w / 2, b0, b0 + t, -d / 2, d / 2),
         blk(-w / 2, w / 2, h0, h, d / 2 - bt, d / 2)]
  out += pair(blk(w / 2 - t, w / 2, h0, h, -d / 2, d / 2))
  if kick:
    out.append(blk(-w / 2 + t, w / 2 - t, h0, b0, -d / 2 + 0.015, -d / 2 + 0.035))
  if drawer:
    inner_top = h - drawer - t
    out.append(blk(-w / 2, w / 2, inner_top, h, -d / 2 + FRONT_T, d / 2))
    out += fronts(rng, -w / 2 + t, w / 2 - t, inner_top, h - t, -d / 2 + FRONT_T,
                  [('drawer', 1, 1)])
  for s in np.linspace(b0 + t, inner_top, shelves + 2)[1:-1]:
    out.append(blk(-w / 2 + t, w / 2 - t, s - t / 2, s + t / 2, -d / 2 + 0.01, d / 2))
  return out


def _bed(rng, w=(0.9, 2.0), head=None, foot=False, base_kind='legs', wide_head=False,
         posts=False, platform=False):
  u = rng.uniform
  width, depth, fh, mt, rail = u(*w), u(1.9, 2.2), u(0.22, 0.35), u(0.15, 0.28), u(0.1, 0.18)
  ht = (u(0.08, 0.14) if wide_head else u(0.04, 0.08)) if head else 0.0
  ft, mi = u(0.03, 0.06) if foot else 0.0, u(0.05, 0.15) if platform else u(0.0, 0.03)
  fb = u(0.03, 0.08) if base_kind == 'plinth' else fh - rail  # frame bottom
  fz, fd = (ft - ht) / 2, depth - ht - ft  # frame centre and depth
  out = [slab(0, fz, width, fd, fb, fh)]
  if base_kind == 'legs':
    out += legs(width, fd, fb + 0.005, u(0.04, 0.07), u(0.0, 0.05), rng.random() < 0.4,
                mid=width > 1.6, z=fz)
  elif base_kind == 'plinth':
    out += base(rng, 'plinth', width, fd, fb, fz)
  x0, x1, top = -width / 2 + mi, width / 2 - mi, fh + mt
  z0, z1 = -depth / 2 + ft + mi, depth / 2 - ht - (0.005 if head else mi)
  out.append(blk(x0, x1, fh - 0.005, top, z0, z1))  # mattress
  n = 1 if x1 - x0 < 1.25 else 2
  pw, pd, pt = (x1 - x0 - 0.06 * (n + 1)) / n, u(0.3, 0.42), u(0.1, 0.15)
  out += [blk(x0 + 0.06 + i * (pw + 0.06), x0 + (i + 1) * (pw + 0.06), top - 0.02, top + pt,
              z1 - 0.04 - pd, z1 - 0.04) for i in range(n)]  # pillows at the +z head end
  if rng.random() < 0.6:  # a duvet draped over the foot end of the mattress
    dx, drop, dt = u(0.02, 0.05), u(0.1, 0.2), u(0.03, 0.05)
    out.append(blk(x0 - dx, x1 + dx, top - drop, top + dt, z0 - (0.0 if foot else dx),
                   z1 - 0.06 - pd - u(0.0, 0.15)))
  if head:
    hh, ext = max(u(*head), top + 0.3), u(0.02, 0.08) if wide_head else 0.0
    out.append(blk(-width / 2 - ext, width / 2 + ext, 0, hh, depth / 2 - ht, depth / 2))
  if foot:
    out.append(blk(-width / 2, width / 2, fb if posts else 0, top + u(-0.05, 0.12), -depth / 2,
                   -depth / 2 + ft))
  if posts:
    t, px = u(0.05, 0.09), width / 2 - 0.01
    out += pair(slab(px + t / 2, depth / 2 - ht / 2, t, t, 0, hh + u(0.03, 0.1)))
    out += pair(slab(px + t / 2, -depth / 2 + t / 2, t, t, 0, top + u(0.15, 0.3)))
  return out


def _chair(rng, back='solid', arms=False):
  u = rng.uniform
  w, d, sh, top = u(0.42, 0.6), u(0.45, 0.6), u(0.42, 0.48), u(0.75, 1.05)
  st, lt, ins = u(0.03, 0.06), u(0.03, 0.05), u(0.0, 0.025)
  out = [slab(0, 0, w, d, sh - st, sh)] + legs(w, d, sh - st, lt, ins, rng.random() < 0.3)
  px, pz, bt = w / 2 - ins - lt / 2, d / 2 - ins - lt / 2, u(0.02, 0.04)
  if back == 'solid':
    out.append(slab(0, d / 2 - bt / 2, w * u(0.85, 1.0), bt, sh - 0.01, top))
  else:  # two posts continue the rear legs; a top rail plus slats or ladder rails between them
    rail = u(0.05, 0.09)
    out += pair(slab(px, pz, lt, lt, sh - 0.01, top)) + [slab(0, pz, 2 * px, bt, top - rail, top)]
    if back == 'slats':
      n, inner = int(rng.integers(3, 7)), 2 * px - lt
      sw = np.clip(inner / (n + 1) * u(0.3, 0.6), 0.012, 0.06)
      out += [slab(x, pz, sw, bt * 0.8, sh, top - rail + 0.005)
              for x in np.linspace(-inner / 2, inner / 2, n + 2)[1:-1]]
    else:
      n = max(1, min(int(rng.integers(2, 5)), int((top - rail - sh - 0.1) / 0.08)))
      rh = rail * u(0.6, 0.9)
      out += [slab(0, pz, 2 * px, bt, h, h + rh)
              for h in np.linspace(sh + 0.1, top - rail, n + 1)[:-1]]
  if arms:
    ah, aw = min(sh + u(0.18, 0.25), top - 0.04), lt + u(0.01, 0.03)
    out += pair(blk(px - aw / 2, px + aw / 2, ah - 0.03, ah, -d / 2 + 0.01, pz))
    out += pair(slab(px, -d / 2 + ins + lt / 2 + u(0.0, 0.05), lt, lt, sh - 0.01, ah))
  return out


def _office_chair(rng):
  u = rng.uniform
  r, w, d, sh, top = u(0.24, 0.31), u(0.45, 0.56), u(0.44, 0.52), u(0.44, 0.5), u(0.85, 1.05)
  ct, ch, bw, bh, bt = u(0.06, 0.09), u(0.04, 0.06), u(0.04, 0.06), u(0.03, 0.05), u(0.04, 0.07)
  s0 = sh - ct  # underside of the seat cushion
  out = [slab(0, 0, 2 * r, bw, ch, ch + bh), slab(0, 0, bw, 2 * r, ch, ch + bh),  # cross base
         col(0, 0, u(0.04, 0.06), ch, ch + bh + 0.02), col(0, 0, u(0.02, 0.03), ch + bh, s0),
         slab(0, 0, u(0.15, 0.2), u(0.15, 0.2), s0 - 0.04, s0 + 0.005), slab(0, 0, w, d, s0, sh)]
  out += [col(x, z, 0.025, 0, ch + 0.01) for x, z in  # casters
          ((r - 0.025, 0), (0.025 - r, 0), (0, r - 0.025), (0, 0.025 - r))]
  bz, b0 = d / 2 - bt / 2 + u(0.0, 0.04), sh + u(0.04, 0.1)
  out += [slab(0, bz, w * u(0.8, 0.95), bt, b0, top),  # backrest and its L-shaped support
          slab(0, bz + bt / 2 + 0.012, 0.05, 0.025, s0 - 0.03, b0 + 0.12),
          blk(-0.025, 0.025, s0 - 0.03, s0, 0, bz + bt / 2 + 0.025)]
  if rng.random() < 0.5:
    out += pair(slab(w / 2 + 0.015, 0.05, 0.03, 0.04, s0, sh + 0.2))
    out += pair(slab(w / 2 + 0.015, 0.03, 0.06, 0.24, sh + 0.2, sh + 0.23))
  return out


def _club_chair(rng):
  u = rng.uniform
  w, d, top, lh, sh = u(0.65, 0.85), u(0.7, 0.85), u(0.75, 0.9), u(0.04, 0.1), u(0.4, 0.45)
  aw, ah, bt, ct = u(0.1, 0.16), u(0.55, 0.65), u(0.14, 0.2), u(0.1, 0.14)
  out = legs(w, d, lh + 0.01, u(0.03, 0.05), u(0.02, 0.05), rng.random() < 0.5)
  out += [slab(0, 0, w, d, lh, sh - ct), blk(-w / 2, w / 2, lh, top, d / 2 - bt, d / 2),
          blk(aw - w / 2, w / 2 - aw, sh - ct - 0.01, sh, -d / 2 + 0.01, d / 2 - bt + 0.01)]
  return out + pair(blk(w / 2 - aw, w / 2, lh, ah, -d / 2, d / 2))


def _sofa(rng, w=(1.6, 2.6), arms='box', tuxedo=False, back_cushions=None):
  u = rng.uniform
  width, d, top = u(*w), u(0.8, 1.0), u(0.7, 0.8) if tuxedo else u(0.75, 0.95)
  base_kind = 'legs' if rng.random() < 0.5 else 'plinth'
  bh = u(0.08, 0.18) if base_kind == 'legs' else u(0.04, 0.1)
  sh, ct, bt = u(0.4, 0.46), u(0.1, 0.16), u(0.15, 0.25)
  aw = {'none': 0.0, 'box': u(0.15, 0.25), 'track': u(0.08, 0.14), 'roll': u(0.12, 0.18)}[arms]
  ah = top if tuxedo else u(0.55, 0.68)
  out = [slab(0, 0, width, d, bh, sh - ct), blk(-width / 2, width / 2, bh, top, d / 2 - bt, d / 2)]
  out += base(rng, base_kind, width, d, bh)
  x0, x1, z1 = aw - width / 2, width / 2 - aw, d / 2 - bt
  xs = np.linspace(x0, x1, min(int(rng.integers(1, 4)), max(1, int((x1 - x0) / 0.5))) + 1)
  spans = [(a + 0.005, b - 0.005) for a, b in zip(xs, xs[1:])]  # one per cushion
  cushioned = rng.random() < 0.5 if back_cushions is None else back_cushions
  if cushioned:
    bct, bch = u(0.1, 0.16), top - u(0.03, 0.08)
    out += [blk(a, b, sh - 0.01, bch, z1 - bct, z1 + 0.01) for a, b in spans]
    z1 -= bct
  out += [blk(a, b, sh - ct - 0.01, sh, 0.005 - d / 2, z1) for a, b in spans]
  if aw:
    out += pair(blk(width / 2 - aw, width / 2, bh, ah, -d / 2, d / 2))
  if arms == 'roll':
    roll = (aw / 2 + 0.02, u(0.05, 0.08), d / 2 - 0.01)
    out += pair(ellipsoid((width / 2 - aw / 2, -ah, 0.0), roll))
  return out


def _table_rect(rng, coffee=False):
  u = rng.uniform
  w, d, h = (u(0.9, 1.3), u(0.5, 0.7), u(0.38, 0.48)) if coffee else (u(1.2, 2.0), u(0.75, 1.0),
                                                                      u(0.72, 0.78))
  tt, lt, ins = u(0.025, 0.05), u(0.035, 0.06) if coffee else u(0.045, 0.08), u(0.0, 0.06)
  out = [slab(0, 0, w, d, h - tt, h)] + legs(w, d, h - tt, lt, ins, rng.random() < 0.35)
  if coffee:  # a lower shelf between the legs
    s = u(0.08, 0.15)
    return out + [slab(0, 0, w - 2 * ins, d - 2 * ins, s, s + u(0.015, 0.025))]
  ax, az, ah = w / 2 - ins - lt / 2, d / 2 - ins - lt / 2, u(0.06, 0.1)  # aprons under the top
  out += [slab(0, sz * az, 2 * ax, 0.02, h - tt - ah, h - tt) for sz in (-1, 1)]
  return out + pair(slab(ax, 0, 0.02, 2 * az, h - tt - ah, h - tt))


def _table_round(rng, pedestal):
  u = rng.uniform
  r, h, tt = u(0.4, 0.6) if pedestal else u(0.35, 0.55), u(0.72, 0.78), u(0.025, 0.05)
  out = [col(0, 0, r, h - tt, h)]
  if pedestal:
    fh, fr = u(0.03, 0.06), r * u(0.45, 0.65)
    out.append(col(0, 0, u(0.04, 0.08), fh, h - tt, taper=u(0.7, 1.0)))
    if rng.random() < 0.6:
      return out + [col(0, 0, fr, 0, fh, taper=u(0.4, 0.8))]
    return out + [slab(0, 0, 2 * fr, 0.06, 0, fh), slab(0, 0, 0.06, 2 * fr, 0, fh)]
  lr, rp, n = u(0.015, 0.03), r * u(0.6, 0.8), int(rng.integers(3, 5))  # 3 or 4 round legs
  angles = np.pi / 2 + 2 * np.pi * np.arange(n) / n + (np.pi / 4 if n == 4 else 0.0)
  out.append(col(0, 0, rp + lr, h - tt - u(0.05, 0.09), h - tt))  # apron drum
  return out + [col(rp * np.cos(a), rp * np.sin(a), lr, 0, h - tt) for a in angles]


def _table_trestle(rng):
  u = rng.uniform
  w, d, h, tt, pt = u(1.4, 2.0), u(0.75, 0.95), u(0.72, 0.78), u(0.035, 0.06), u(0.04, 0.08)
  px, fh, sh, pd, fd = w / 2 - u(0.15, 0.3), u(0.04, 0.07), u(0.2, 0.4), u(0.5, 0.7), u(0.75, 0.9)
  return [slab(0, 0, w, d, h - tt, h), slab(0, 0, 2 * px, u(0.03, 0.05), sh, sh + u(0.06, 0.1)),
          *pair(slab(px, 0, pt, d * pd, fh, h - tt)), *pair(slab(px, 0, pt + 0.02, d * fd, 0, fh)),
          *pair(slab(px, 0, pt + 0.02, d * 0.8, h - tt - 0.05, h - tt))]


def _desk(rng, kind):
  u = rng.uniform
  w = u(1.3, 1.6) if kind == 'double' else u(1.0, 1.6)
  d, h, tt, lt, ins = u(0.5, 0.8), u(0.72, 0.78), u(0.025, 0.04), u(0.035, 0.06), u(0.0, 0.04)
  out, zf, pw, mt = [slab(0, 0, w, d, h - tt, h)], -d / 2 + u(0.02, 0.04), u(0.35, 0.42), 0.02
  mh, mx = u(0.25, 0.45), w / 2  # modesty panel at +z: height and half width
  if kind == 'legs':
    out += legs(w, d, h - tt, lt, ins, rng.random() < 0.4)
    mh, mx = u(0.08, 0.15), w / 2 - ins - lt / 2
  elif kind in ('single', 'double'):  # drawer pedestals, front at -z
    sides = (-1, 1) if kind == 'double' else (1 if rng.random() < 0.5 else -1,)
    for s in sides:
      cx, kick = s * (w / 2 - pw / 2 - u(0.0, 0.02)), u(0.04, 0.08)
      out.append(blk(cx - pw / 2, cx + pw / 2, 0, h - tt, zf, d / 2 - 0.01))
      out += fronts(rng, cx - pw / 2 + 0.015, cx + pw / 2 - 0.015, kick, h - tt - 0.015, zf,
                    [('drawer', 1, 1)] * int(rng.integers(2, 5)))
    if kind == 'double':  # a shallow centre drawer under the top
      out += fronts(rng, pw - w / 2 + 0.01, w / 2 - pw - 0.01, h - tt - u(0.08, 0.1), h - tt, zf,
                    [('drawer', 1, 1)])
    elif rng.random() < 0.4:  # the other end is a panel or two legs
      out.append(slab(-sides[0] * (w / 2 - 0.02), 0, 0.03, d - 0.02, 0, h - tt))
    else:
      out += [slab(-sides[0] * (w / 2 - ins - lt / 2), sz * (d / 2 - ins - lt / 2), lt, lt, 0,
                   h - tt) for sz in (-1, 1)]
  elif kind == 'panel':
    out += pair(blk(w / 2 - u(0.02, 0.04), w / 2, 0, h - tt, -d / 2, d / 2))
  else:  # sled: side frames of tubes (uprights, floor runner, top runner) and a back bar
    t, ins, x = u(0.03, 0.05), u(0.02, 0.06), w / 2 - u(0.03, 0.08)
    out += pair(slab(x, ins + t / 2 - d / 2, t, t, 0, h - tt))
    out += pair(slab(x, d / 2 - ins - t / 2, t, t, 0, h - tt))
    out += pair(slab(x, 0, t, d - 2 * ins, 0, t))
    out += pair(slab(x, 0, t, d - 2 * ins, h - tt - t, h - tt))
    mh, mx, mt = t, x, t
  return out + [blk(-mx, mx, h - tt - mh, h - tt, d / 2 - 0.03 - mt, d / 2 - 0.03)]


def _dresser(rng, w, h, d, rows, base_kind, top_weight=1.0, overhang=(0.0, 0.02), base_h=None):
  """A case on a base with a grid of drawers; rows(rng) -> drawers per row, from the top."""
  u = rng.uniform
  bh = base_h or {'plinth': (0.05, 0.1), 'legs': (0.1, 0.22), 'bun': (0.04, 0.08)}[base_kind]
  out, region = case(rng, u(*w), u(*h), u(*d), base_kind, u(*bh), u(*overhang))
  return out + fronts(rng, *region, [('drawer', c, top_weight if i == 0 else 1.0)
                                     for i, c in enumerate(rows(rng))])


def _rows(first, n, cols):
  """rows(rng): a top row of `first` drawers (None: like the rest), then n = (lo, hi) rows of
  cols = (lo, hi) drawers each."""
  def sample(rng):
    c, k = int(rng.integers(cols[0], cols[1] + 1)), int(rng.integers(n[0], n[1] + 1))
    return [c if first is None else first] + [c] * k
  return sample


def _nightstand(rng, kind):
  u = rng.uniform
  w, h, d = u(0.4, 0.6), u(0.45, 0.65), u(0.35, 0.5)
  if kind == 'round':
    r = w / 2
    return [col(0, 0, r, h - 0.03, h), col(0, 0, u(0.035, 0.06), 0.02, h - 0.03),
            col(0, 0, r * u(0.6, 0.85), 0, u(0.02, 0.04), taper=u(0.6, 0.9))]
  drawer = kind == 'drawer_over_shelf'
  h0 = u(0.1, 0.2) if drawer else u(0.04, 0.08)
  out = base(rng, 'legs' if drawer or rng.random() < 0.5 else 'plinth', w, d, h0)
  return out + open_case(rng, w, h, d, h0, shelves=int(rng.integers(0, 2)),
                         drawer=u(0.12, 0.16) if drawer else 0.0)


def tub(x0, x1, z0, z1, h, walls, floor) -> list[Part]:
  """Open-topped basin: a floor slab and four walls of thickness (sides, front, back)."""
  ws, wf, wb = walls
  return [blk(x0, x1, 0, floor, z0, z1), blk(x0, x0 + ws, 0, h, z0, z1),
          blk(x1 - ws, x1, 0, h, z0, z1), blk(x0, x1, 0, h, z0, z0 + wf),
          blk(x0, x1, 0, h, z1 - wb, z1)]


def faucet(rng, cz, h0, reach, height) -> list[Part]:
  """Vertical faucet column standing on height h0 at (0, cz) with a spout towards -z."""
  r, sp, top = rng.uniform(0.012, 0.02), rng.uniform(0.02, 0.03), h0 + height
  out = [col(0, cz, r, h0, top), blk(-sp / 2, sp / 2, top - sp, top, cz - reach, cz + r)]
  if rng.random() < 0.5:  # lever on top
    return out + [blk(-0.006, 0.006, top, top + 0.012, cz, cz + rng.uniform(0.05, 0.08))]
  return out + pair(col(rng.uniform(0.06, 0.08), cz, 0.015, h0, h0 + 0.04))  # two taps


def _sink(rng, kind):
  u = rng.uniform
  w, d = u(0.6, 0.7) if kind == 'double' else u(0.4, 0.7), u(0.35, 0.55)
  if kind == 'vessel':  # a flared bowl with a lip on a stone slab, tall faucet behind it
    st, bh, cz, taper = u(0.02, 0.04), u(0.1, 0.16), -0.04, u(1.2, 1.6)
    rt = min(w / 2, (d - 0.08) / 2) - u(0.01, 0.04)
    out = [slab(0, 0, w, d, 0, st), col(0, cz, rt / taper, st - 0.005, st + bh, taper=taper),
           col(0, cz, rt + 0.006, st + bh - 0.012, st + bh)]
    return out + faucet(rng, d / 2 - 0.04, st, d / 2 - 0.04 - cz, bh + u(0.06, 0.14))
  if kind == 'wall':  # basin with a thick front apron and a backsplash carrying the spout
    bh, sp_t, sp_h, wall = u(0.12, 0.18), u(0.02, 0.04), u(0.22, 0.35), u(0.015, 0.03)
    hs, zs = sp_h - u(0.05, 0.09), d / 2 - sp_t
    out = tub(-w / 2, w / 2, -d / 2, zs, bh, (wall, u(0.04, 0.07), wall), 0.02)
    out += [blk(-w / 2, w / 2, 0, sp_h, zs, d / 2),
            blk(-0.012, 0.012, hs - 0.024, hs, zs - u(0.1, 0.14), zs)]
    return out + pair(slab(0.08, zs - 0.015, 0.025, 0.03, hs - 0.03, hs))
  deck = u(0.05, 0.08) if kind == 'rim' else u(0.1, 0.14)  # back deck that carries the faucet
  if kind == 'rim':  # thin-walled basin
    bh, walls = u(0.1, 0.18), (u(0.015, 0.03),) * 2 + (deck,)
  else:  # a thick countertop block with one or two recessed basins
    bh, wide = u(0.08, 0.14), kind == 'countertop'
    walls = (u(0.05, 0.1), u(0.04, 0.08), deck) if wide else (u(0.03, 0.05), u(0.03, 0.05), deck)
  out = tub(-w / 2, w / 2, -d / 2, d / 2, bh, walls, u(0.02, 0.03))
  if kind == 'double':
    out.append(slab(0, 0, u(0.03, 0.06), d, 0, bh))
  return out + faucet(rng, d / 2 - deck / 2, bh, u(0.08, 0.14), u(0.1, 0.17))


def _cabinet(rng, w, h, d, base_kind, rows, overhang=(0.0, 0.015)):
  """A case with door/drawer fronts; rows(rng, width) gives the `fronts` rows."""
  u = rng.uniform
  width, bh = u(*w), u(0.05, 0.1) if base_kind == 'plinth' else u(0.12, 0.25)
  out, region = case(rng, width, u(*h), u(*d), base_kind, bh, u(*overhang))
  return out + fronts(rng, *region, rows(rng, width))


def _bookshelf(rng):
  u = rng.uniform
  w, h, d = u(0.6, 1.2), u(0.9, 2.0), u(0.28, 0.4)
  n = min(int(rng.integers(3, 7)), int((h - 0.1) / 0.22))
  return open_case(rng, w, h, d, 0.0, shelves=n - 1, kick=u(0.05, 0.09))


def _lamp(rng, kind):
  u = rng.uniform
  if kind == 'globe':
    r, bh, neck = u(0.1, 0.16), u(0.02, 0.04), u(0.05, 0.15)
    ry = r * u(0.9, 1.1)
    return [col(0, 0, u(0.06, 0.1), 0, bh), col(0, 0, u(0.012, 0.02), bh, bh + neck + 0.02),
            ellipsoid((0.0, -(bh + neck + ry), 0.0), (r, ry, r))]
  if kind in ('arc_floor', 'desk_arm'):  # pole, horizontal arm to -z, hanging cone shade
    floor = kind == 'arc_floor'
    h = u(1.5, 1.9) if floor else u(0.4, 0.6)
    br, pr, at = (u(0.12, 0.18), u(0.012, 0.02), u(0.025, 0.04)) if floor else (u(0.06, 0.09), 0.01,
                                                                                0.02)
    reach = u(0.4, 0.6) if floor else h * u(0.25, 0.45)
    sr, sh = (u(0.15, 0.22), u(0.15, 0.25)) if floor else (u(0.06, 0.09), u(0.1, 0.14))
    foot = slab(0, 0, 2 * br, 2 * br, 0, u(0.04, 0.06)) if floor else col(0, 0, br, 0, 0.025)
    return [foot, col(0, 0, pr, 0.02, h), blk(-at / 2, at / 2, h - at, h, -reach, pr),
            col(0, -reach, 0.008, h - 0.1, h),
            col(0, -reach, sr, h - 0.1 - sh, h - 0.08, taper=u(0.3, 0.55))]
  if kind == 'floor':
    h, br, pr, sr, sh = u(1.3, 1.8), u(0.13, 0.2), u(0.012, 0.02), u(0.17, 0.25), u(0.25, 0.35)
    body = [col(0, 0, br, 0, u(0.02, 0.04), taper=u(0.7, 1.0)), col(0, 0, pr, 0.02, h - sh * 0.5)]
  else:  # table lamps: a disk base and pole ('table') or a vase-like ceramic body ('drum')
    h = u(0.35, 0.7)
    sr, sh = h * u(0.25, 0.38), h * u(0.3, 0.42)
    if kind == 'drum':
      vr, vh = min(sr * 0.8, u(0.07, 0.12)), (h - sh) * u(0.55, 0.8)
      body = [col(0, 0, vr * 0.7, 0, 0.02), col(0, 0, 0.012, vh - 0.01, h - sh * 0.5),
              ellipsoid((0.0, -(0.01 + vh / 2), 0.0), (vr, vh / 2, vr))]
    else:
      body = [col(0, 0, u(0.06, 0.1), 0, u(0.02, 0.04)),
              col(0, 0, u(0.008, 0.015), 0.02, h - sh / 2)]
  return body + [col(0, 0, sr, h - sh, h, taper=1.0 if kind == 'drum' else u(0.55, 0.85))]


P = functools.partial
_REGISTRY = {
    'bed': {
        'bed/headboard_legs': P(_bed, head=(0.8, 1.1)),
        'bed/platform_no_headboard': P(_bed, base_kind='plinth', platform=True),
        'bed/head_and_footboard': P(_bed, head=(0.85, 1.15), foot=True),
        'bed/upholstered_headboard': P(_bed, head=(1.0, 1.2), base_kind='plinth', wide_head=True),
        'bed/post_bed': P(_bed, head=(0.9, 1.05), foot=True, base_kind='none', posts=True),
        'bed/single_no_headboard': P(_bed, w=(0.9, 1.2)),
    },
    'chair': {
        'chair/solid_back': P(_chair, back='solid'),
        'chair/slatted_back': P(_chair, back='slats'),
        'chair/ladder_back': P(_chair, back='ladder'),
        'chair/armchair': lambda rng: _chair(rng, 'solid' if rng.random() < 0.5 else 'slats', True),
        'chair/office_pedestal': _office_chair,
        'chair/club_upholstered': _club_chair,
    },
    'sofa': {
        'sofa/box_arms': P(_sofa, arms='box'),
        'sofa/track_arms_cushioned': P(_sofa, arms='track', back_cushions=True),
        'sofa/armless': P(_sofa, w=(1.4, 2.2), arms='none'),
        'sofa/rolled_arm_loveseat': P(_sofa, w=(1.4, 1.7), arms='roll'),
        'sofa/tuxedo': P(_sofa, arms='box', tuxedo=True, back_cushions=False),
    },
    'table': {
        'table/rect_four_legs': _table_rect,
        'table/round_pedestal': P(_table_round, pedestal=True),
        'table/round_legs': P(_table_round, pedestal=False),
        'table/coffee_shelf': P(_table_rect, coffee=True),
        'table/trestle': _table_trestle,
    },
    'desk': {f'desk/{name}': P(_desk, kind=kind) for name, kind in (
        ('four_legs', 'legs'), ('single_pedestal', 'single'), ('double_pedestal', 'double'),
        ('panel_sides', 'panel'), ('sled_frame', 'sled'))},
    'dresser': {
        'dresser/grid_plinth': P(_dresser, w=(0.9, 1.6), h=(0.75, 1.0), d=(0.4, 0.6),
                                 rows=_rows(None, (1, 3), (2, 3)), base_kind='plinth'),
        'dresser/grid_legs': P(_dresser, w=(0.9, 1.5), h=(0.7, 0.95), d=(0.4, 0.55),
                               rows=_rows(None, (1, 2), (2, 3)), base_kind='legs'),
        'dresser/tall_chest': P(_dresser, w=(0.8, 1.0), h=(1.0, 1.2), d=(0.4, 0.55),
                                rows=_rows(2, (3, 4), (1, 1)), top_weight=0.7, base_kind='plinth'),
        'dresser/wide_low': P(_dresser, w=(1.3, 1.6), h=(0.7, 0.85), d=(0.45, 0.6),
                              rows=_rows(None, (1, 2), (3, 3)), base_kind='bun',
                              overhang=(0.01, 0.03)),
        'dresser/mixed_bun_feet': P(_dresser, w=(1.0, 1.5), h=(0.8, 1.1), d=(0.4, 0.55),
                                    rows=_rows(3, (2, 3), (1, 2)), top_weight=0.6, base_kind='bun'),
    },
    'nightstand': {
        'nightstand/drawers_plinth': P(_dresser, w=(0.4, 0.6), h=(0.45, 0.65), d=(0.35, 0.5),
                                       rows=_rows(None, (0, 2), (1, 1)), base_kind='plinth'),
        'nightstand/open_shelf': P(_nightstand, kind='open_shelf'),
        'nightstand/drawer_over_shelf': P(_nightstand, kind='drawer_over_shelf'),
        'nightstand/legged_drawer': P(_dresser, w=(0.4, 0.55), h=(0.5, 0.65), d=(0.35, 0.45),
                                      rows=_rows(None, (0, 1), (1, 1)), base_kind='legs',
                                      base_h=(0.2, 0.3)),
        'nightstand/round_pedestal': P(_nightstand, kind='round'),
    },
    'sink': {f'sink/{name}': P(_sink, kind=kind) for name, kind in (
        ('rim_basin', 'rim'), ('round_vessel', 'vessel'), ('countertop_inset', 'countertop'),
        ('wall_backsplash', 'wall'), ('double_basin', 'double'))},
    'cabinet': {
        'cabinet/doors': P(_cabinet, w=(0.5, 1.0), h=(0.8, 1.4), d=(0.35, 0.6), base_kind='plinth',
                           rows=lambda rng, w: [('door', 1 if w < 0.6 else 2, 1)]),
        'cabinet/bookshelf': _bookshelf,
        'cabinet/wardrobe': P(_cabinet, w=(0.9, 1.2), h=(1.8, 2.0), d=(0.55, 0.6),
                              base_kind='plinth', rows=lambda rng, w: [('door', 2, 1)],
                              overhang=(0.01, 0.03)),
        'cabinet/sideboard_legs': P(_cabinet, w=(1.0, 1.2), h=(0.75, 0.9), d=(0.4, 0.5),
                                    base_kind='legs', rows=lambda rng, w: [
                                        ('drawer', int(rng.integers(2, 4)), 0.25),
                                        ('door', 3, 0.75)]),
        'cabinet/glass_front': P(_cabinet, w=(0.6, 1.0), h=(1.2, 2.0), d=(0.35, 0.45),
                                 base_kind='plinth', rows=lambda rng, w: [
                                     ('glass', 2, 0.6), ('door', 2, rng.uniform(0.3, 0.45))]),
    },
    'lamp': {f'lamp/{name}': P(_lamp, kind=kind) for name, kind in (
        ('table_tapered', 'table'), ('floor_tapered', 'floor'), ('globe', 'globe'),
        ('drum_vase', 'drum'), ('arc_floor', 'arc_floor'), ('desk_arm', 'desk_arm'))},
}
_ROUND = frozenset({'table/round_pedestal', 'table/round_legs', 'nightstand/round_pedestal',
                    'lamp/table_tapered', 'lamp/floor_tapered', 'lamp/globe', 'lamp/drum_vase'})


def styles(class_name: str) -> tuple[str, ...]:
  """The style names ('<class>/<family>') of a class."""
  return tuple(_REGISTRY[class_name])


def make_shape(class_name: str, rng: np.random.Generator, style: str | None = None) -> Shape:
  """Samples a shape of the class: a uniform style (unless given) with random dimensions."""
  if class_name not in _REGISTRY:
    raise ValueError(f'Unknown furniture class {class_name!r}; expected one of {CLASSES}.')
  names = styles(class_name)
  if style is None:
    style = names[int(rng.integers(len(names)))]
  elif '/' not in style:
    style = f'{class_name}/{style}'
  if style not in names:
    raise ValueError(f'Unknown style {style!r} for {class_name!r}; expected one of {names}.')
  parts, size = normalize_to_unit_box(_REGISTRY[class_name][style](rng))
  return Shape(class_name, style, tuple(parts), np.asarray(size, np.float64), style in _ROUND)
