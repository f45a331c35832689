"""A counter-based PRNG for initialising parameters, which XLA compiles in half the time.

`jax.jit(model.init)` draws a few hundred arrays of distinct shapes, and XLA compiles the bit
generator of each draw on its own: threefry's 20 rounds, or the Philox rounds of 'rbg', are
most of what init compiles (BENCHMARKS.md, section 6). `init_key`'s keys draw their bits from
a counter hash instead (two rounds of murmur3's 32-bit finaliser over the element's index
and the key's two words), about a tenth of the operations. The initialisers are unchanged:
jax.random's uniform, normal and truncated normal turn these bits into the same
distributions; only the source of the bits differs, as a different seed would.

For initialisation only: the training noise, condition dropout and sampling keep JAX's
default threefry keys.
"""
import jax
from jax.extend import random as jex_random
import jax.numpy as jnp
import numpy as np

# Odd constants (the golden ratio's and murmur3's) that keep the hashes of different roles
# (a draw's words, fold_in's and split's children, a seed) apart.
_GOLDEN = 0x9E3779B9
_FOLD_IN = (0x85EBCA6B, 0xC2B2AE35)
_SPLIT = (0x27D4EB2F, 0x165667B1)
_SECOND_WORD = 0x632BE5AB
_SEED = (0x7F4A7C15, 0x1B873593)


def _fmix(x):
  """murmur3's finaliser: a bijection of uint32 in which every input bit flips about half of
  the output bits."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def _words(key, counter, salt=0):
  """One pseudo-random uint32 per counter (any shape) under key [2]."""
  counter = jnp.asarray(counter).astype(jnp.uint32)
  return _fmix(_fmix(counter ^ (key[0] ^ jnp.uint32(salt))) + key[1])


def _seed(seed):
  seed = jnp.asarray(seed).astype(jnp.uint32)
  golden = jnp.uint32(_GOLDEN)
  return jnp.stack([_fmix(_fmix(seed ^ jnp.uint32(salt)) + golden) for salt in _SEED])


def _children(key, data, salts):
  return jnp.stack([_words(key, data, salts[0]), _words(key, data, salts[1])], -1)


def _fold_in(key, data):
  return _children(key, data, _FOLD_IN)


def _split(key, shape):
  count = int(np.prod(shape))
  return _children(key, jnp.arange(count, dtype=jnp.uint32), _SPLIT).reshape(*shape, 2)


def _random_bits(key, bit_width, shape):
  counter = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape)
  low = _words(key, counter)
  if bit_width == 64:
    high = _words(key, counter, _SECOND_WORD)
    return (high.astype(jnp.uint64) << 32) | low.astype(jnp.uint64)
  if bit_width == 32:
    return low
  return (low >> (32 - bit_width)).astype(jnp.dtype(f'uint{bit_width}'))  # the top bits


COUNTER_HASH = jex_random.define_prng_impl(
    key_shape=(2,), seed=_seed, split=_split, random_bits=_random_bits, fold_in=_fold_in,
    name='counter_hash', tag='ch')


def init_key(seed: int) -> jax.Array:
  """A typed PRNG key for `model.init` (under jit) whose draws compile cheaply.

  Args:
    seed: an integer seed; the same seed gives the same parameters.
  Returns:
    A scalar key of the counter-hash implementation; split and fold_in work as usual.
  """
  return jax.random.key(seed, impl=COUNTER_HASH)
