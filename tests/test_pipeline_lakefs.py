"""Run records on the lakeFS backend: the pipeline's `records/events` table on the `runs` branch, kept through our lakeFS-API
server (`mlinfra lake serve` on a free port, a process of its own) as every worker would keep them, including two workers
appending to one run at once and two workers running steps of one run id concurrently."""
import json, os, socket, subprocess, sys
from pathlib import Path
import pytest
from mlinfra_nb.lake.lakefs import LakeFSLake
from mlinfra_nb.pipeline import EVENTS, RUNS_BRANCH, Pipeline, run_key
from mlinfra_nb.workspace import Workspace

def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture
def lakefs_env(tmp_path, clean_env):
    "`mlinfra lake serve` over a fresh lake on a free port (its own process, stopped by pid), with a key; the environment that points a workspace's lake at it."
    from mlinfra_nb.lake import Lake
    from mlinfra_nb.lake.server import create_credentials
    root = tmp_path/'served'/'lake'
    lake = Lake(root, user='setup'); key = create_credentials(lake, 'workers'); lake.store.close()
    port = free_port()
    proc = subprocess.Popen([sys.executable, '-m', 'mlinfra_nb.cli', 'lake', 'serve', '--root', str(root), '--port', str(port)],
                            env={**clean_env, 'MLINFRA_HOME': str(tmp_path/'server-home')}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f'http://127.0.0.1:{port}' in line, (line, proc.stderr.read() if proc.poll() is not None else '')
        yield {**clean_env, 'LAKEFS_ENDPOINT': f'http://127.0.0.1:{port}', 'LAKEFS_ACCESS_KEY_ID': key.access_key_id, 'LAKEFS_SECRET_ACCESS_KEY': key.secret_access_key}
    finally:
        os.kill(proc.pid, 15); proc.wait(30)

def workspace(env:dict, home:Path)->Workspace: return Workspace(home, env={k: v for k, v in env.items() if k.startswith('LAKEFS_')})

APPEND = """
import json, sys
from mlinfra_nb.pipeline import Pipeline
from mlinfra_nb.workspace import Workspace
pipe = Pipeline(Workspace(sys.argv[1]))
who, n = sys.argv[2], int(sys.argv[3])
for i in range(n): pipe._append(('shared', f'{who}-{i}', 'running', {}), ('shared', f'{who}-{i}', 'succeeded', {'notebook': f'{who}-{i}.ipynb'}))
print('appended', n)
"""

def test_run_records_live_in_lakefs_and_two_workers_append_at_once(tmp_path, lakefs_env):
    ws = workspace(lakefs_env, tmp_path/'home')
    pipe = Pipeline(ws)
    assert isinstance(pipe.lake, LakeFSLake) and RUNS_BRANCH in pipe.repo.branches()
    pipe._append(('shared', '', 'created', {'steps': ['a', 'b'], 'params': {}, 'branch': 'run-shared', 'key': 'shared'}))
    script = tmp_path/'append.py'; script.write_text(APPEND)
    n = 6
    workers = [subprocess.Popen([sys.executable, str(script), str(ws.home), who, str(n)], env=lakefs_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for who in ('a', 'b')]
    outs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-3000:] for o in outs]
    ev = pipe._events('shared')
    assert len(ev) == 1 + 2 * 2 * n, ev                                      # every event of both workers, none lost or doubled
    assert ev.groupby('step').status.apply(list).drop('').to_dict() == {f'{w}-{i}': ['running', 'succeeded'] for w in 'ab' for i in range(n)}
    assert len(set(ev[ev.step != ''].worker)) == 2
    rec = pipe.info('shared')
    assert rec['status'] == 'running' and len(rec['step_status']) == 2 * n and set(rec['step_status'].status) == {'succeeded'}
    # the record is the lakeFS repository's: a client of the server that never saw this workspace reads the same events
    other = LakeFSLake(lakefs_env['LAKEFS_ENDPOINT'], lakefs_env['LAKEFS_ACCESS_KEY_ID'], lakefs_env['LAKEFS_SECRET_ACCESS_KEY'],
                       workspace=Workspace(tmp_path/'elsewhere', env={}))
    assert other.repository('pipeline').table(RUNS_BRANCH, EVENTS).count('*').fetchall()[0][0] == len(ev)

def test_two_workers_run_steps_of_one_run_on_lakefs(tmp_path, lakefs_env, mlinfra):
    "As `test_pipeline.test_two_workers_run_independent_steps_of_one_run`, with the lake behind our lakeFS-API server."
    home = tmp_path/'home'
    run = lambda *argv: subprocess.Popen([mlinfra, 'run', '--home', str(home), *argv], env=lakefs_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = run('--steps', 'ingest,validate,features', '-p', 'rows', '800')
    out = first.communicate(timeout=900)
    assert first.returncode == 0, out[1][-3000:]
    pipe = Pipeline(workspace(lakefs_env, home))
    assert isinstance(pipe.lake, LakeFSLake)
    main_before = pipe.repo.head('main').id
    rid, args = 'manual__2026-12-05T01:00:00+00:00', ['--steps', 'ingest,train', '-p', 'rows', '900', '-p', 'seed', '5', '-p', 'epochs', '1']
    workers = [run('--run-id', rid, *args, '--only', step) for step in ('ingest', 'train')]
    outs = [w.communicate(timeout=900) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outs]
    rec, ev = pipe.info(rid), pipe._events(rid)
    assert rec['status'] == 'running' and pipe.repo.head('main').id == main_before
    assert {s: list(ev[ev.step == s].status) for s in ('ingest', 'train')} == {'ingest': ['running', 'succeeded'], 'train': ['running', 'succeeded']}
    assert {e['branch'] for e in map(json.loads, ev[ev.status == 'created'].data)} == {rec['branch']}
    finishers = [run('--run-id', rid, *args, '--finish') for _ in range(2)]
    outs = [f.communicate(timeout=600) for f in finishers]
    assert [f.returncode for f in finishers] == [0, 0], [o[1][-2000:] for o in outs]
    rec = pipe.info(rid)
    merges = [c.id for c in pipe.repo.log('main') if c.metadata.get('pipeline_run') == rid]
    assert rec['status'] == 'succeeded' and merges == [rec['merge_commit']] == [pipe.repo.head('main').id]   # two finishers, one merge
    assert pipe.repo.table('main', 'tables/transactions').count('*').fetchall()[0][0] == 900
    assert pipe.repo.exists('main', f'runs/{run_key(rid)}/train.json')
