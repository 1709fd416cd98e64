"""Every command in README.md and docs/ works from a clone of the repository.

Each command of a ```bash block is checked for what can go wrong before any data is read: the
files it names exist in the repository (none outside it, such as ../shared), its flags are
defined by the program it runs, its config file loads with its argument and overrides and passes
validation, and a launcher's dry run succeeds. The README quick start also runs for real, with
tiny overrides (slow).
"""
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from infomax_jax import evaluation_config
from infomax_jax import validation
from tests.test_cli import parsed_config
from tests.test_reliability import TINY_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ['README.md'] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(f'{ROOT}/docs/*.md'))
MODULES = {'infomax_jax.main', 'infomax_jax.probe', 'infomax_jax.plots',
           'infomax_jax.show_augmentations'}


def documented_commands():
  """(doc, command words) of every shell command in the docs' ```bash blocks."""
  commands = []
  for doc in DOCS:
    with open(os.path.join(ROOT, doc)) as f:
      text = f.read()
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
      for line in block.replace('\\\n', ' ').splitlines():
        for command in line.split('&&'):
          words = shlex.split(command, comments=True)
          if words:
            commands.append((doc, words))
  return commands


COMMANDS = documented_commands()


def _defined_flags(path):
  with open(os.path.join(ROOT, path)) as f:
    source = f.read()
  names = set(re.findall(r"DEFINE_\w+\(\s*'(\w+)'", source))
  names |= set(re.findall(r"add_argument\(\s*'--([\w-]+)'", source))
  return names


def _check_program(words):
  """Flags of `python -m infomax_jax.X ...` or `python benchmarks/X.py ...` against its source."""
  environment = [w for w in words if re.match(r'^[A-Z_]+=', w)]
  words = words[len(environment):]
  assert words[0] == 'python', words
  if words[1] == '-m':
    module, args = words[2], words[3:]
    if module == 'pytest':
      return
    assert module in MODULES, module
    path = module.replace('.', '/') + '.py'
  else:
    path, args = words[1], words[2:]
  assert os.path.isfile(os.path.join(ROOT, path)), f'{path} is not in the repository'
  defined = _defined_flags(path)
  overrides = [a.split('=', 1)[1] for a in args if a.startswith('--override=')]
  config_args = [a for a in args if a.startswith('--config')]
  for arg in args:
    if arg.startswith('-'):
      name = arg.lstrip('-').split('=')[0].split('.')[0]
      assert name in defined or name.removeprefix('no') in defined, f'{path} has no flag --{name}'
    if arg.startswith('--probe.'):   # the field exists in the probe section
      node = evaluation_config.probe_config()
      for part in arg[len('--probe.'):].split('=')[0].split('.'):
        node = node[part]
  if config_args:
    validation.validate_config(parsed_config([*config_args, *overrides]))


def _check_launcher(words):
  if words[0] == 'sbatch':
    words = words[next(i for i, w in enumerate(words) if w.startswith('launch/')):]
  result = subprocess.run(['bash', *words, '--dry-run'], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, 'SLURM_JOB_NODELIST': 'gpu[01-02]',
                               'SLURM_NTASKS': '2'})
  assert result.returncode == 0, result.stderr
  assert 'infomax_jax.main' in result.stdout


@pytest.mark.parametrize('doc,words', COMMANDS, ids=[f'{d}:{" ".join(w)[:60]}'
                                                     for d, w in COMMANDS])
def test_documented_command(doc, words):
  del doc
  for word in words:
    value = word.split('=', 1)[-1]
    assert not value.startswith('../'), f'{value} is outside the repository'
    if re.match(r'^(configs|benchmarks|launch|infomax_jax|docs|tests)/', value):
      path = value.split(':')[0]
      assert os.path.exists(os.path.join(ROOT, path)) or '/results/' in path or path.endswith(
          '.png'), f'{path} is not in the repository'
  if words[0] == 'pip':
    assert os.path.isfile(os.path.join(ROOT, words[words.index('-r') + 1]))
  elif words[0].startswith('launch/') or words[0] == 'sbatch':
    _check_launcher(words)
  else:
    _check_program(words)


def test_the_docs_have_commands():
  assert len(COMMANDS) > 20
  assert {d for d, _ in COMMANDS} >= {'README.md', 'docs/results.md', 'docs/evaluation.md'}


@pytest.mark.slow   # pretraining and probing processes: ~1 min
def test_readme_quick_start_runs_with_tiny_overrides(tmp_path):
  quick_start = [w for d, w in COMMANDS if d == 'README.md' and 'infomax_jax.main' in w
                 and any('quickstart' in x for x in w)]
  assert quick_start
  workdir = str(tmp_path / 'run')
  main = [w if not w.startswith('--workdir=') else f'--workdir={workdir}' for w in quick_start[0]]
  subprocess.run([sys.executable, *main[1:], *TINY_FLAGS, '--config.total_steps=2'], cwd=ROOT,
                 check=True, capture_output=True)
  probe = next(w for d, w in COMMANDS if d == 'README.md' and 'infomax_jax.probe' in w)
  probe = [w if not w.startswith('--workdir=') else f'--workdir={workdir}' for w in probe]
  result = subprocess.run([sys.executable, *probe[1:], '--probe.epochs=1', '--noplots'],
                          cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert 'top-1' in result.stdout
