"""Fail when the library, the notebooks or the README are out of sync.

Runs `nbdev_export` and `nbdev_clean` (on nbs/ and on the step notebooks in mlinfra_nb/pipelines/) in place and reports every file they
change (the regenerated files are left for you to look at and commit), then
checks README.md against nbs/index.ipynb.
"""
import hashlib, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def snapshot(*dirs):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest()
            for d in dirs for p in sorted((ROOT/d).rglob('*'))
            if p.is_file() and '__pycache__' not in p.parts and '.ipynb_checkpoints' not in p.parts}

def changed(before, after):
    return sorted(str(p.relative_to(ROOT)) for p in before.keys() | after.keys() if before.get(p) != after.get(p))

def run_and_diff(cmd, *dirs, args=()):
    before = snapshot(*dirs)
    subprocess.run([str(BIN/cmd), *args], cwd=ROOT, check=True)
    return changed(before, snapshot(*dirs))

problems = []
if (c := run_and_diff('nbdev_export', 'mlinfra_nb')):
    problems.append('nbdev_export changed the library (notebooks and mlinfra_nb/ out of sync): ' + ', '.join(c))
if (c := run_and_diff('nbdev_clean', 'nbs')):
    problems.append('nbdev_clean changed notebooks (run nbdev_clean and commit): ' + ', '.join(c))
STEPS = 'mlinfra_nb/pipelines'   # the pipeline's step notebooks: package data, outside nbs/
if (c := run_and_diff('nbdev_clean', STEPS, args=('--fname', STEPS))):
    problems.append(f'nbdev_clean changed step notebooks (run nbdev_clean --fname {STEPS} and commit): ' + ', '.join(c))
if subprocess.run([sys.executable, str(ROOT/'tools'/'readme.py'), '--check'], cwd=ROOT).returncode:
    problems.append('README.md is out of sync with nbs/index.ipynb')
for p in problems: print('FAIL:', p, file=sys.stderr)
if problems: sys.exit(1)
print('library, notebooks and README are in sync')
