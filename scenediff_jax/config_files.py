"""Config files load each other by path: configs/ is a folder of files that
`--config=configs/NAME.py` names, not a package on the path."""
import importlib.util
import os


def load(path: str, name: str = 'config'):
  """The module of the config file at `path`."""
  spec = importlib.util.spec_from_file_location(f'scenediff_configs_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling(config_file: str, name: str):
  """The module of `name`.py in the folder of `config_file` (pass `__file__`)."""
  return load(os.path.join(os.path.dirname(os.path.abspath(config_file)), f'{name}.py'), name)
