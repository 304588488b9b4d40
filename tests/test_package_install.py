"""A wheel built from the checkout, installed in a fresh venv outside it, runs `mlinfra run` from a directory outside it.

Slow-ish (a wheel build, a venv and six step kernels), and part of `make test`. To stay offline and quick, the fresh venv
gets its dependencies from the venv running this test through a `.pth` line naming that venv's site-packages: a
directory named in a `.pth` file joins `sys.path`, but the `.pth` files inside it are not read, so the checkout's
editable install (itself a `.pth` file there) does not come along, and `mlinfra_nb` can only be the installed wheel's.
"""
import os, shutil, subprocess, sys, sysconfig, zipfile
from pathlib import Path
import pytest
from mlinfra_nb.pipeline import STEPS

ROOT = Path(__file__).resolve().parent.parent

@pytest.fixture(scope='module')
def wheel(tmp_path_factory)->Path:
    "The wheel of a copy of the checkout's sources (so the checkout gets no build/ or egg-info), built with this venv's setuptools."
    tmp_path = tmp_path_factory.mktemp('wheel')
    src = tmp_path/'src'; src.mkdir()
    for f in ('setup.py', 'settings.ini', 'README.md', 'LICENSE'): shutil.copy(ROOT/f, src/f)
    shutil.copytree(ROOT/'mlinfra_nb', src/'mlinfra_nb', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index', '-q', '-w', str(tmp_path/'dist'), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wheels = list((tmp_path/'dist').glob('mlinfra_nb-*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]

def fresh_venv(tmp_path, wheel:Path)->Path:
    "A new venv with the wheel installed in it and this venv's site-packages (not its .pth files) behind it; its bin folder."
    venv = tmp_path/'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=300)
    py = venv/'bin'/'python'
    site = Path(subprocess.run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], capture_output=True, text=True, check=True).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ('purelib', 'platlib'))
    (site/'_mlinfra_test_dependencies.pth').write_text(''.join(f'{p}\n' for p in ours))
    r = subprocess.run([py, '-m', 'pip', 'install', '--no-deps', '--no-index', '-q', str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return venv/'bin'

def test_wheel_ships_step_notebooks_and_license(wheel):
    whl = zipfile.ZipFile(wheel)
    names = whl.namelist()
    assert {f'mlinfra_nb/pipelines/{s}.ipynb' for s in STEPS} <= set(names), names
    lic = [n for n in names if '.dist-info/' in n and n.rsplit('/', 1)[-1] == 'LICENSE']
    assert len(lic) == 1 and whl.read(lic[0]).decode().lstrip().startswith('Apache License\n'), lic
    assert whl.read(lic[0]) == (ROOT/'LICENSE').read_bytes()

def test_installed_wheel_runs_the_pipeline_outside_the_checkout(tmp_path, wheel):
    bin_ = fresh_venv(tmp_path, wheel)
    away = tmp_path/'elsewhere'; away.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(('MLINFRA_', 'LAKEFS_', 'PYTHON')) and k not in ('VIRTUAL_ENV', 'PYTEST_CURRENT_TEST')}
    env.update(PATH=f"{bin_}{os.pathsep}{env.get('PATH', '')}", MLINFRA_HOME=str(away/'home'), TF_CPP_MIN_LOG_LEVEL='2')
    run = lambda *argv, timeout=120: subprocess.run([str(a) for a in argv], cwd=away, env=env, capture_output=True, text=True, timeout=timeout)
    where = run(bin_/'python', '-c', 'import mlinfra_nb, mlinfra_nb.pipeline as p; print(mlinfra_nb.__file__); print(p.steps_dir())')
    assert where.returncode == 0, where.stderr[-3000:]
    module, steps = map(Path, where.stdout.split())
    assert module.is_relative_to(bin_.parent) and not module.resolve().is_relative_to(ROOT), module    # the wheel's, not the checkout's
    assert steps.is_relative_to(bin_.parent) and sorted(p.stem for p in steps.glob('*.ipynb')) == sorted(STEPS)
    gen = run(bin_/'mlinfra', 'datasets', 'generate', '--rows', '3000', '--days', '20', '--out', 'events.csv')
    assert gen.returncode == 0, gen.stderr[-3000:]
    r = run(bin_/'mlinfra', 'run', '--steps', 'ingest,validate,features,train,evaluate,register', '-p', 'source', away/'events.csv',
            '-p', 'epochs', '1', timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert 'succeeded: ingest, validate, features, train, evaluate, register; merged into main' in r.stdout, r.stdout
    shown = run(bin_/'mlinfra', 'runs')
    assert shown.returncode == 0 and 'succeeded' in shown.stdout, shown.stdout
