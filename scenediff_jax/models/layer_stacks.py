"""Repeated layers under `nn.scan`, and the parameter layout that goes with it.

Layers that repeat with the same shapes (the shape stages' transformer layers, the pose
UNet's blocks of one width) run as one scanned layer with parameters stacked on a leading
axis: the compiled program holds one copy of the layer instead of one per repetition
(BENCHMARKS.md, "Compilation"). The ResNet's blocks are not scanned: on a CPU, XLA runs
convolutions inside a loop about 3× slower.

Layout. A run of layers that an unrolled model would name `Block_3` … `Block_6` is one
module named `Block_3_to_6` whose arrays have a leading axis of 4, in that order. Workdirs
trained before the scan hold `Block_3` … `Block_6`; `stack_like` turns such a tree into the
scanned layout and `unstack` turns a scanned tree (or its abstract shapes) back, so old
checkpoints restore (training/checkpoints.py, inference/restore.py).
"""
from collections.abc import Callable, Sequence
import functools
import re

import flax.linen as nn
import jax
import numpy as np

_STACKED = re.compile(r'(.+)_(\d+)_to_(\d+)')


def stacked_name(prefix: str, first: int, last: int) -> str:
  """The name of the scanned run of layers `prefix_first` … `prefix_last`."""
  return f'{prefix}_{first}_to_{last}'


def runs(signatures: Sequence) -> list[tuple[int, int]]:
  """[start, stop) of each run of consecutive equal signatures (a layer's shapes)."""
  bounds = [0] + [i for i in range(1, len(signatures)) if signatures[i] != signatures[i - 1]]
  return list(zip(bounds, bounds[1:] + [len(signatures)]))


@functools.cache
def _scan_body(layer: type[nn.Module], emit: bool) -> type[nn.Module]:
  """`layer` as an nn.scan body: (carry, *args) → (output, output if emit else None)."""

  class Body(layer):  # pylint: disable=missing-class-docstring
    def __call__(self, x, *args):
      y = super().__call__(x, *args)
      return y, (y if emit else None)

  Body.__name__ = layer.__name__
  return Body


def scanned(layer: type[nn.Module], length: int, name: str, in_axes=(), emit: bool = False,
            **fields) -> Callable:
  """`length` layers `layer(**fields)` applied in turn, their parameters stacked.

  Args:
    layer: the module class; its __call__(x, *args) returns the next x.
    length: how many layers.
    name: the module's name (`stacked_name`).
    in_axes: per extra argument, nn.broadcast (the same for every layer) or 0 (one slice
      per layer).
    emit: also return every layer's output, stacked.
    **fields: the layer's attributes.
  Returns:
    A module called as (x, *args) → (x after the last layer, outputs or None).
  """
  body = _scan_body(layer, emit)
  return nn.scan(body, variable_axes={'params': 0}, split_rngs={'params': True},
                 in_axes=in_axes, length=length)(name=name, **fields)


def unstack(tree):
  """A scanned layout → the unrolled one: `Block_3_to_6` [4, …] → `Block_3` … `Block_6`.

  Leaves may be arrays or jax.ShapeDtypeStruct (then the shapes lose their leading axis).
  """
  if isinstance(tree, (list, tuple)):
    return type(tree)(unstack(x) for x in tree)
  if not isinstance(tree, dict):
    return tree
  out = {}
  for key, value in tree.items():
    match = _STACKED.fullmatch(key) if isinstance(key, str) else None
    if match and isinstance(value, dict):
      base, first, last = match.group(1), int(match.group(2)), int(match.group(3))
      for i in range(first, last + 1):
        out[f'{base}_{i}'] = jax.tree.map(functools.partial(_slice, index=i - first),
                                          unstack(value))
    else:
      out[key] = unstack(value)
  return out


def run(layer: type[nn.Module], prefix: str, first: int, length: int, x, *args, in_axes=(),
        emit: bool = False, **fields):
  """Applies layers `prefix_first` … `prefix_{first + length − 1}` to x in turn.

  A run of one is a plain layer of that name; a longer run is `scanned`. Arguments and
  returns as `scanned`'s module: (x, stacked outputs or None).
  """
  if length == 1:
    args = [a[0] if axis == 0 else a for a, axis in zip(args, in_axes)]
    y = layer(name=f'{prefix}_{first}', **fields)(x, *args)
    return y, (y[None] if emit else None)
  return scanned(layer, length, stacked_name(prefix, first, first + length - 1), in_axes, emit,
                 **fields)(x, *args)


def _slice(x, index):
  if isinstance(x, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=x.sharding)
  return x[index]


def _key_name(key) -> str:
  """A pytree key as a string: dict keys, attribute names and sequence indices alike, so a
  tree restored as plain dicts and lists lines up with the state it was saved from."""
  for field in ('key', 'name', 'idx'):
    if hasattr(key, field):
      return str(getattr(key, field))
  return str(key)


def leaves_by_path(tree) -> dict:
  """{(str, …) path: leaf} of a pytree (paths as `_key_name` writes them)."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {tuple(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _gather(path, saved):
  """The leaf at `path` of the flat tree `saved`, stacking unrolled layers where `path`
  names a stacked run that `saved` does not hold; KeyError if it holds neither."""
  if path in saved:
    return saved[path]
  for j, part in enumerate(path):
    match = _STACKED.fullmatch(part)
    if not match:
      continue
    base, first, last = match.group(1), int(match.group(2)), int(match.group(3))
    try:
      parts = [_gather(path[:j] + (f'{base}_{i}',) + path[j + 1:], saved)
               for i in range(first, last + 1)]
    except KeyError:
      continue
    return np.stack([np.asarray(x) for x in parts])
  raise KeyError('/'.join(path))


def stack_like(tree, like):
  """The arrays of `tree` in the structure of `like`: where `like` has a stacked run
  `Block_3_to_6`, the unrolled `Block_3` … `Block_6` of `tree` are stacked.

  Args:
    tree: any pytree of arrays, e.g. a checkpoint restored as nested dicts and lists.
    like: the pytree to match (arrays or jax.ShapeDtypeStruct), e.g. an abstract state.
  Returns:
    A pytree of `like`'s structure holding `tree`'s arrays (stacked ones as numpy).
  Raises:
    KeyError: `tree` holds no array (or run of arrays) for a leaf of `like`.
  """
  saved = leaves_by_path(tree)
  paths, treedef = jax.tree_util.tree_flatten_with_path(like)
  leaves = [_gather(tuple(_key_name(k) for k in path), saved) for path, _ in paths]
  return jax.tree.unflatten(treedef, leaves)


def is_unrolled(tree, like) -> bool:
  """Whether `tree` (a saved pytree or its metadata) holds, somewhere, the unrolled layers
  of a run that `like` has stacked."""
  saved = leaves_by_path(tree)
  prefixes = {path[:j + 1] for path in saved for j in range(len(path))}
  for path in leaves_by_path(like):
    if path in saved:
      continue
    for j, part in enumerate(path):
      if (match := _STACKED.fullmatch(part)) and \
          path[:j] + (f'{match.group(1)}_{match.group(2)}',) in prefixes:
        return True
  return False
