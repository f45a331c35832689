"""The scene model's optimizer: AdamW after clipping the gradients' global norm, with the
small parameter arrays updated as one vector.

The paper-size model has 608 parameter arrays; 409 of them (biases, norm scales, small
kernels) hold 0.4% of its parameters. Updated one by one, each array costs the train step a
few kernels (its share of the global norm, the moments, the update), which the step pays in
tracing, compiling and loading from the compilation cache. Packed, the small arrays are one
vector and a few kernels in all, while the large arrays keep their own updates, with no copy
of them (concatenating every array into one vector made the paper-size step 14% slower on a
CPU) and the sharding that the rules give them: the small ones are the arrays those rules
replicate anyway (sharding.MIN_SHARDED_SIZE). BENCHMARKS.md, section 6.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from scenediff_jax.training import sharding

SMALL = sharding.MIN_SHARDED_SIZE  # elements: arrays below this are packed


def pack(tree, small=SMALL) -> list:
  """[one vector of the tree's arrays under `small` elements, then every larger array], in
  jax.tree.leaves order."""
  leaves = jax.tree.leaves(tree)
  few = [jnp.ravel(x) for x in leaves if np.size(x) < small]
  vector = jnp.concatenate(few) if few else jnp.zeros((0,), jnp.float32)
  return [vector] + [x for x in leaves if np.size(x) >= small]


def unpack(packed, like, small=SMALL):
  """The tree shaped like `like` whose arrays `packed` holds (pack's inverse)."""
  leaves, treedef = jax.tree.flatten(like)
  vector, large = packed[0], iter(packed[1:])
  out, offset = [], 0
  for leaf in leaves:
    if np.size(leaf) < small:
      size = int(np.size(leaf))
      out.append(vector[offset:offset + size].reshape(np.shape(leaf)).astype(leaf.dtype))
      offset += size
    else:
      out.append(next(large))
  return jax.tree.unflatten(treedef, out)


def pack_small_arrays(inner: optax.GradientTransformation,
                      small=SMALL) -> optax.GradientTransformation:
  """`inner` applied to pack(updates) (and pack(params)): the same numbers, since pack only
  regroups elements, for an elementwise optimizer with a global norm such as AdamW."""

  def init(params):
    return inner.init(pack(params, small))

  def update(updates, state, params=None):
    packed, state = inner.update(pack(updates, small), state,
                                 None if params is None else pack(params, small))
    return unpack(packed, updates, small), state

  return optax.GradientTransformation(init, update)


def make_optimizer(config, packed=True) -> optax.GradientTransformation:
  """AdamW after clipping the gradients' global norm, on a warm-up + cosine schedule; with
  `packed`, under pack_small_arrays (training does; per array is the layout of checkpoints
  saved before, which restore converts)."""
  t = config.training
  total = t.diffusion_steps + t.joint_steps
  schedule = optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, t.warmup_steps,
                                                max(total, t.warmup_steps + 1),
                                                t.learning_rate * 0.05)
  tx = optax.chain(optax.clip_by_global_norm(t.grad_clip),
                   optax.adamw(schedule, weight_decay=t.weight_decay))
  return pack_small_arrays(tx) if packed else tx


def zero_optimizer_state(tx, params):
  """`tx.init(params)` for an optimizer whose state starts at zero (AdamW's moments and step
  counts; a test holds make_optimizer to that), made on the host: jitted, the init compiles one
  kernel per array, 3 s at paper sizes, and op by op longer."""
  zeros = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), jax.eval_shape(tx.init, params))
  return jax.device_put(zeros)


def packed_moments_of(opt_state):
  """make_optimizer(packed=False)'s state → make_optimizer's: every parameter-shaped subtree
  (AdamW's moments, nested dicts) packed."""
  is_tree = lambda x: isinstance(x, dict)
  return jax.tree.map(lambda x: pack(x) if is_tree(x) else x, opt_state, is_leaf=is_tree)
