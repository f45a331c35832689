"""launch/colab_tpu.ipynb runs top to bottom on this machine's CPU (smoke config): install
(skipped inside the repository), train and evaluate, predict a generated scene, export."""
import os

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_colab_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  from nbclient import NotebookClient

  work = tmp_path / 'colab'
  monkeypatch.setenv('SCENEDIFF_WORKDIR', str(work))  # the kernel inherits the environment
  notebook = nbformat.read(os.path.join(REPO, 'launch', 'colab_tpu.ipynb'), as_version=4)
  NotebookClient(notebook, timeout=900, kernel_name='python3',
                 resources={'metadata': {'path': REPO}}).execute()
  for name in ('eval/metrics.json', 'predicted/scene.glb', 'predicted/preview.png',
               'export/bundle.json', 'export/sample_scene.jax_exported'):
    assert (work / name).exists(), name
  outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
  assert any('image/png' in o.get('data', {}) for o in outputs)  # the preview is shown inline
  assert any('cpu 1 device(s)' in o.get('text', '') for o in outputs)
