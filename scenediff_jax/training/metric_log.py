"""Training logs: one JSON object per line in `workdir/logs/*.jsonl`, TensorBoard event files
in `workdir/logs` (tags prefixed by the stage), and absl logging. With several processes only
process 0 writes; every process still checks the values."""
import json
import math
import os

from absl import logging
import jax


class MetricLog:

  def __init__(self, workdir: str, name: str = 'metrics.jsonl', tensorboard_prefix: str = None,
               start_step: int = None):
    """start_step: the step training resumes from. Lines of later steps (logged after the
    checkpoint it resumes from, then lost with the process) are dropped, so that no step is
    in the log twice."""
    self.directory = os.path.join(workdir, 'logs')
    os.makedirs(self.directory, exist_ok=True)
    self.path = os.path.join(self.directory, name)
    self.prefix = tensorboard_prefix
    self._writer = None
    self.lead = jax.process_index() == 0
    if self.lead and start_step is not None and os.path.exists(self.path):
      self._truncate_after(start_step)

  def _truncate_after(self, step):
    with open(self.path) as f:
      lines = f.readlines()
    def kept(line):
      try:
        return json.loads(line)['step'] <= step
      except (ValueError, KeyError, TypeError):  # a line cut short by a kill
        return False
    keep = [line if line.endswith('\n') else line + '\n' for line in lines if kept(line)]
    if len(keep) != len(lines):
      with open(self.path + '.tmp', 'w') as f:
        f.writelines(keep)
      os.replace(self.path + '.tmp', self.path)

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
