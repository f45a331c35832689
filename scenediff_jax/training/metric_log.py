"""Training logs: one JSON object per line in `workdir/logs/*.jsonl`, TensorBoard event files
in `workdir/logs` (tags prefixed by the stage), and absl logging. With several processes only
process 0 writes; every process still checks the values."""
import json
import math
import os

from absl import logging
import jax


class MetricLog:

  def __init__(self, workdir: str, name: str = 'metrics.jsonl', tensorboard_prefix: str = None):
    self.directory = os.path.join(workdir, 'logs')
    os.makedirs(self.directory, exist_ok=True)
    self.path = os.path.join(self.directory, name)
    self.prefix = tensorboard_prefix
    self._writer = None
    self.lead = jax.process_index() == 0

  def write(self, step: int, metrics: dict):
    values = {k: float(v) for k, v in metrics.items()}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:  # Fail loudly: a NaN loss never recovers and wastes the rest of the budget.
      raise FloatingPointError(f'Non-finite {", ".join(bad)} at step {step}: {values}')
    if not self.lead:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': step, **values}) + '\n')
    if self.prefix is not None:
      if self._writer is None:
        import tensorboardX  # only where event files are wanted
        self._writer = tensorboardX.SummaryWriter(self.directory, flush_secs=30)
      for k, v in values.items():
        self._writer.add_scalar(f'{self.prefix}/{k}', v, step)
    logging.info('step %d: %s', step, ', '.join(f'{k}={v:.4g}' for k, v in values.items()))

  def close(self):
    if self._writer is not None:
      self._writer.close()
