"""Training logs: one JSON object per line in `workdir/logs/metrics.jsonl`, plus absl logging."""
import json
import math
import os

from absl import logging


class MetricLog:

  def __init__(self, workdir: str, name: str = 'metrics.jsonl'):
    os.makedirs(os.path.join(workdir, 'logs'), exist_ok=True)
    self.path = os.path.join(workdir, 'logs', name)

  def write(self, step: int, metrics: dict):
    values = {k: float(v) for k, v in metrics.items()}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:  # Fail loudly: a NaN loss never recovers and wastes the rest of the budget.
      raise FloatingPointError(f'Non-finite {", ".join(bad)} at step {step}: {values}')
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': step, **values}) + '\n')
    logging.info('step %d: %s', step, ', '.join(f'{k}={v:.4g}' for k, v in values.items()))
