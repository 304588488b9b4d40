"Package-level guarantees: import cost, the console script, and the README."
import re, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent

def run(cmd, env, cwd, **kw):
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, **kw)

def test_import_does_not_load_tensorflow(clean_env, tmp_path):
    code = "import sys, mlinfra_nb, mlinfra_nb.workspace, mlinfra_nb.datasets, mlinfra_nb.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    r = run([sys.executable, '-c', code], clean_env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '[]'

def test_import_is_fast(clean_env, tmp_path):
    # best of three, in fresh interpreters, against a bare interpreter start as the baseline
    def best(code):
        ts = []
        for _ in range(3):
            t = time.perf_counter(); run([sys.executable, '-c', code], clean_env, tmp_path, check=True); ts.append(time.perf_counter() - t)
        return min(ts)
    assert best('import mlinfra_nb') - best('pass') < 0.5

def test_version(mlinfra, clean_env, tmp_path):
    import mlinfra_nb
    r = run([mlinfra, '--version'], clean_env, tmp_path)
    assert (r.returncode, r.stdout.strip()) == (0, f'mlinfra {mlinfra_nb.__version__}')

@pytest.mark.parametrize('argv, msg', [
    (['datasets', 'generate', '--rows', 'x', '--out', 'a.parquet'], "'x' is not an integer"),
    (['datasets', 'generate', '--rows', '10', '--drift', 'lots', '--out', 'a.parquet'], "'lots' is not a number"),
    (['datasets', 'generate', '--rows', '10', '--out', 'a.json'], 'use a .parquet or .csv file name'),
    (['datasets', 'generate', '--rows', '10', '--out', '/proc/nope/a.parquet'], 'mlinfra: error:'),
    (['datasets'], 'the following arguments are required: ACTION'),
    (['nonsense'], "invalid choice: 'nonsense'"),
    (['demo', '--rows', '-5'], 'must be at least 1'),
])
def test_bad_arguments_one_line_no_traceback(mlinfra, clean_env, tmp_path, argv, msg):
    r = run([mlinfra, *argv], clean_env, tmp_path)
    assert r.returncode != 0
    assert 'Traceback' not in r.stderr and r.stderr.count('\n') == 1, r.stderr
    assert msg in r.stderr
    assert list(tmp_path.glob('a.*')) == []

def test_bad_settings_one_line(mlinfra, clean_env, tmp_path):
    r = run([mlinfra, 'demo', '--rows', '10'], {**clean_env, 'MLINFRA_SERVE__REST_PORT': 'http'}, tmp_path)
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'MLINFRA_SERVE__REST_PORT' in r.stderr

@pytest.mark.parametrize('damage, msg', [
    (lambda f: f.write_bytes(b'[log]\nlevel = "d\xe9bug"\n'), "config.toml is not UTF-8 text (byte 16); save it as UTF-8"),
    (lambda f: f.write_bytes(b'\xff\xfe[\x00l\x00o\x00g\x00]\x00'), "config.toml is not UTF-8 text (byte 0); save it as UTF-8"),
    (lambda f: f.mkdir(), "config.toml is not a file; the settings file must be a TOML file"),
])
def test_unreadable_config_file_one_line(mlinfra, clean_env, tmp_path, damage, msg):
    "A settings file that is not UTF-8 (Latin-1, UTF-16), or a folder in its place, is named in one line, from the API and the command."
    from mlinfra_nb.workspace import InvalidInput, Workspace
    home = tmp_path/'home'; home.mkdir()
    damage(home/'config.toml')
    with pytest.raises(InvalidInput, match=re.escape(f"{home/'config.toml'}")) as e: Workspace(home, env={})
    assert msg in str(e.value)
    for argv in (['runs', '--home', str(home)], ['lake', 'credentials', 'list', '--home', str(home)]):
        r = run([mlinfra, *argv], clean_env, tmp_path)
        assert r.returncode == 1 and 'Traceback' not in r.stderr and r.stderr.count('\n') == 1, r.stderr
        assert r.stderr == f"mlinfra: error: {home/'config.toml'} {msg[len('config.toml '):]}\n", r.stderr

def test_generate_deterministic(mlinfra, clean_env, tmp_path):
    for name in ('a.parquet', 'b.parquet'):
        r = run([mlinfra, 'datasets', 'generate', '--rows', '3000', '--drift', '1', '--seed', '5', '--out', name], clean_env, tmp_path)
        assert r.returncode == 0, r.stderr
    a, b = pd.read_parquet(tmp_path/'a.parquet'), pd.read_parquet(tmp_path/'b.parquet')
    assert len(a) == 3000
    pd.testing.assert_frame_equal(a, b)

def test_runs_write_into_workspace(mlinfra, clean_env, tmp_path):
    "A pipeline run keeps its record and executed notebooks in the workspace MLINFRA_HOME names (`tests/test_demo.py` runs `mlinfra demo`)."
    r = run([mlinfra, 'run', '--steps', 'ingest', '-p', 'rows', '500'], clean_env, tmp_path)
    assert r.returncode == 0, r.stderr
    home = Path(clean_env['MLINFRA_HOME'])
    assert (home/'lake'/'catalog.duckdb').is_file() and len(list((home/'pipeline').glob('*/00_ingest.ipynb'))) == 1   # records live in the lake
    runs = run([mlinfra, 'runs'], clean_env, tmp_path)
    assert runs.returncode == 0 and runs.stdout.split()[1] == 'succeeded', runs.stdout + runs.stderr

def test_runs_default_to_dot_mlinfra(mlinfra, clean_env, tmp_path):
    env = {k: v for k, v in clean_env.items() if k != 'MLINFRA_HOME'}
    r = run([mlinfra, 'run', '--steps', 'ingest', '-p', 'rows', '100'], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'.mlinfra'/'lake'/'catalog.duckdb').is_file() and list((tmp_path/'.mlinfra'/'pipeline').glob('*/00_ingest.ipynb'))

def test_readme_in_sync():
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_readme_has_exactly_two_setup_commands():
    text = (ROOT/'README.md').read_text()
    setup = text.split('## Set up', 1)[1].split('\n## ', 1)[0]
    cmds = [l.split('#')[0].strip() for l in setup.split('```sh', 1)[1].split('```', 1)[0].splitlines() if l.strip()]
    assert cmds == ['make demo', 'make test']
    assert 'make test' in (ROOT/'.ci'/'run').read_text()
