"""`mlinfra run` killed with SIGKILL at any point never leaves `main` half-merged, and `--resume` finishes the run exactly once;
step parameters never reach SQL as text."""
import ast, contextlib, json, os, signal, subprocess, time
import pytest
from mlinfra_nb.pipeline import STOP_AT, Pipeline, run_key
from mlinfra_nb.registry import ModelRegistry
from mlinfra_nb.workspace import Workspace

def test_kill_mid_step_then_resume(tmp_path, clean_env, mlinfra):
    home = tmp_path/'home'
    pipe = Pipeline(Workspace(home, env={}))
    main_before = pipe.repo.head('main').id
    p = subprocess.Popen([mlinfra, 'run', '--home', str(home), '-p', 'rows', '3000', '-p', 'epochs', '1'], env=clean_env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline, rid = time.monotonic() + 240, None
    try:
        while time.monotonic() < deadline:                       # wait until the train step is running, then kill the whole run
            assert p.poll() is None, p.communicate()[1][-3000:]
            runs = pipe.runs()
            if len(runs):
                rid = runs.id.iloc[-1]
                st = pipe.info(rid)['step_status']
                if ((st.step == 'train') & (st.status == 'running')).any(): break
            time.sleep(0.2)
        else: pytest.fail("the train step never started")
        time.sleep(2)                                            # well inside the step: the kernel is training
    finally:
        os.killpg(p.pid, signal.SIGKILL); p.wait()               # the runner and its kernel, by process group id
    rec = pipe.info(rid)
    assert rec['status'] == 'running'
    assert dict(zip(rec['step_status'].step, rec['step_status'].status)) == {'ingest': 'succeeded', 'validate': 'succeeded', 'features': 'succeeded', 'train': 'running'}
    assert pipe.repo.head('main').id == main_before              # main untouched by the killed run
    r = subprocess.run([mlinfra, 'run', '--home', str(home), '--resume', rid], env=clean_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = pipe.info(rid)
    assert rec['status'] == 'succeeded' and set(rec['step_status'].status) == {'succeeded'}
    assert pipe.repo.head('main').id == rec['merge_commit'] != main_before
    assert ModelRegistry(pipe.lake, workspace=pipe.workspace).aliases('fraud') == {'candidate': 1, 'stable': 1, 'production': 1}
    shown = subprocess.run([mlinfra, 'runs', rid, '--home', str(home)], env=clean_env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and f"run {rid}: succeeded" in shown.stdout and 'register' in shown.stdout, shown.stdout

def test_bad_invocations_exit_nonzero_with_one_line(tmp_path, clean_env, mlinfra):
    home = str(tmp_path/'home')
    (tmp_path/'bad.yaml').write_text('epochs: [1, 2')
    (tmp_path/'list.yaml').write_text('- 1\n- 2\n')
    for argv, msg in [(['run', '--steps', 'ingest,publish'], "unknown step(s) ['publish']"),
                      (['run', '-p', 'epochs', 'many'], "parameter 'epochs' must be int"),
                      (['run', '--params', str(tmp_path/'missing.yaml')], 'no parameters file'),
                      (['run', '--params', str(tmp_path/'bad.yaml')], 'is not valid YAML'),
                      (['run', '--params', str(tmp_path/'list.yaml')], 'must hold a mapping'),
                      (['run', '--resume', '20990101-000000-ffff'], "no pipeline run '20990101-000000-ffff'"),
                      (['run', '--resume', 'x', '-p', 'epochs', '1'], 'give no steps or parameters'),
                      (['run', '--steps', ''], "--steps '' names no step"),
                      (['run', '--steps', ','], "--steps ',' names no step")]:
        r = subprocess.run([mlinfra, *argv, '--home', home], env=clean_env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, (argv, r.stdout, r.stderr)
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)

# Every point of a run where a runner can die with something half done: before its branch exists, as a step starts, after
# a step's kernel ran but before its notebook was committed, after that commit but before the step was recorded, before
# the merge, and after the merge into main but before the run was recorded as succeeded.
KILL_POINTS = ['recorded', 'ingest:started', 'ingest:executed', 'validate:committed', 'steps-done', 'merged']

@pytest.mark.parametrize('point', KILL_POINTS)
def test_kill_at_each_point_then_resume_finishes_once(tmp_path, clean_env, mlinfra, point):
    home = tmp_path/'home'
    pipe = Pipeline(Workspace(home, env={}))
    main_before = pipe.repo.head('main').id
    p = subprocess.Popen([mlinfra, 'run', '--home', str(home), '--steps', 'ingest,validate', '-p', 'rows', '800'], env={**clean_env, STOP_AT: point},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, status = os.waitpid(p.pid, os.WUNTRACED)               # the runner stops itself (SIGSTOP) when it reaches `point`
        assert os.WIFSTOPPED(status), f"the runner ended before reaching {point}"
    finally:
        os.kill(p.pid, signal.SIGKILL)                            # kill -9 by pid, where it stands
        with contextlib.suppress(ProcessLookupError): os.killpg(p.pid, signal.SIGKILL)   # and a step's kernel, if one is up
        out, err = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL and f"stopped at {point}" in err, err[-3000:]
    rid = pipe.runs().id.iloc[-1]
    assert pipe.info(rid)['status'] == 'running'
    assert (pipe.repo.head('main').id != main_before) == (point == 'merged')   # main moved only if the merge itself happened
    r = subprocess.run([mlinfra, 'run', '--home', str(home), '--resume', rid], env=clean_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = pipe.info(rid)
    assert rec['status'] == 'succeeded' and list(rec['step_status'].status) == ['succeeded', 'succeeded'], rec
    merges = [c.id for c in pipe.repo.log('main') if c.metadata.get('pipeline_run') == rid]
    assert merges == [rec['merge_commit']] == [pipe.repo.head('main').id]          # merged into main exactly once
    assert pipe.repo.table('main', 'tables/transactions').count('*').fetchall()[0][0] == 800
    again = subprocess.run([mlinfra, 'run', '--home', str(home), '--resume', rid], env=clean_env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and 'already succeeded' in again.stderr, again.stderr
    assert pipe.repo.head('main').id == rec['merge_commit']

@pytest.mark.parametrize('name,value,refused', [
    ('since', "2020-01-01' OR '1'='1", "is not a time"),
    ('until', "2099-01-01' OR '1'='1", "is not a time"),
    ('source', "lakefs://pipeline/main/tables/transactions' UNION ALL SELECT * FROM read_csv('/etc/passwd') --", "no table"),
    ('source', "events.csv' UNION ALL SELECT * FROM read_csv('/etc/passwd') --", "source must be a lake table"),
    ('source', "events' OR '1'='1.csv", "does not exist")])
def test_step_parameters_never_reach_sql(tmp_path, clean_env, mlinfra, name, value, refused):
    home = tmp_path/'home'
    pipe = Pipeline(Workspace(home, env={}))
    main_before = pipe.repo.head('main').id
    r = subprocess.run([mlinfra, 'run', '--home', str(home), '--steps', 'ingest', '-p', 'rows', '300', '-p', name, value],
                       env=clean_env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and 'failed at step ingest' in r.stderr and refused in r.stderr, r.stderr[-3000:]
    assert pipe.repo.head('main').id == main_before and not pipe.repo.tables('main')   # nothing merged into main
    rec = pipe.info(pipe.runs().id.iloc[-1])
    assert rec['status'] == 'failed' and not pipe.repo.tables(rec['branch'])            # nor written on the run's branch

def test_two_workers_run_independent_steps_of_one_run(tmp_path, clean_env, mlinfra):
    "ingest and train of one run (train reads the features main has) run at once in two processes; the run's record stays whole."
    home = tmp_path/'home'
    first = subprocess.run([mlinfra, 'run', '--home', str(home), '--steps', 'ingest,validate,features', '-p', 'rows', '800'], env=clean_env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    pipe = Pipeline(Workspace(home, env={}))
    main_before = pipe.repo.head('main').id
    rid, args = 'manual__2026-12-05T01:00:00+00:00', ['--steps', 'ingest,train', '-p', 'rows', '900', '-p', 'seed', '5', '-p', 'epochs', '1']
    workers = [subprocess.Popen([mlinfra, 'run', '--home', str(home), '--run-id', rid, *args, '--only', step], env=clean_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for step in ('ingest', 'train')]
    outs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outs]
    rec = pipe.info(rid)
    ev = pipe._events(rid)
    assert rec['status'] == 'running' and pipe.repo.head('main').id == main_before          # steps alone never merge
    assert {s: list(ev[ev.step == s].status) for s in ('ingest', 'train')} == {'ingest': ['running', 'succeeded'], 'train': ['running', 'succeeded']}
    assert set(ev[ev.step == ''].status) == {'created'}                                       # both joined the one run (a race may record it twice)
    assert {e['branch'] for e in map(json.loads, ev[ev.status == 'created'].data)} == {rec['branch']}
    key = run_key(rid)
    assert pipe.repo.exists(rec['branch'], f'runs/{key}/00_ingest.ipynb') and pipe.repo.exists(rec['branch'], f'runs/{key}/train.json')
    assert [b for b in pipe.repo.branches() if b.startswith(rec['branch'] + '--')] == []    # the steps' own branches are gone
    finishers = [subprocess.Popen([mlinfra, 'run', '--home', str(home), '--run-id', rid, *args, '--finish'], env=clean_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [f.communicate(timeout=300) for f in finishers]
    assert [f.returncode for f in finishers] == [0, 0], [o[1][-2000:] for o in outs]
    rec = pipe.info(rid)
    merges = [c.id for c in pipe.repo.log('main') if c.metadata.get('pipeline_run') == rid]
    assert rec['status'] == 'succeeded' and merges == [rec['merge_commit']] == [pipe.repo.head('main').id]   # two finishers, one merge
    assert pipe.repo.table('main', 'tables/transactions').count('*').fetchall()[0][0] == 900
    assert pipe.repo.exists('main', f'runs/{key}/train.json')

def test_shared_run_from_the_command_line(tmp_path, clean_env, mlinfra):
    home = str(tmp_path/'home')
    def mlinfra_run(*argv): return subprocess.run([mlinfra, 'run', '--home', home, *argv], env=clean_env, capture_output=True, text=True, timeout=300)
    for argv, msg in [(['--steps', 'ingest,train'], "step train reads features/train and features/valid, which step features writes and main does not have yet; "
                                                    "add validate, features (--steps ingest,validate,features,train)"),
                      (['--only', 'ingest'], "--only and --finish work on a shared run: give its --run-id"),
                      (['--run-id', 'r0', '--steps', 'ingest', '--only', 'validate'], "run r0 has no step 'validate'"),
                      (['--run-id', 'r', '--conf', '[1]'], "--conf must be a JSON object"),
                      (['--run-id', 'r', '--steps', 'ingest,validate', '--conf', '{"rows": 400}', '--finish'], "run r cannot be merged yet: ingest (not run), validate (not run) must succeed first"),
                      (['--run-id', 'r', '--steps', 'ingest', '--finish'], "run r has steps ingest,validate"),
                      (['--run-id', 'r', '--steps', 'ingest,validate', '--conf', '{"rows": 400}', '--only', 'validate'], "reads what ingest write(s), which has not succeeded yet")]:
        r = mlinfra_run(*argv)
        assert r.returncode == 1 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)
    r = mlinfra_run('--run-id', 'r', '--steps', 'ingest,validate', '--conf', '{"rows": 400}', '--only', 'ingest')
    assert r.returncode == 0 and 'step ingest of run r succeeded' in r.stdout, r.stderr[-2000:]
    r = mlinfra_run('--run-id', 'r', '--steps', 'ingest,validate', '--conf', '{"rows": 400}')      # alone: the rest of the run, and the merge
    assert r.returncode == 0 and 'run r succeeded: ingest, validate; merged into main' in r.stdout, r.stderr[-2000:]
    shown = subprocess.run([mlinfra, 'runs', 'r', '--home', home], env=clean_env, capture_output=True, text=True, timeout=120)
    assert 'run r: succeeded' in shown.stdout and 'ingest' in shown.stdout and 'validate' in shown.stdout, shown.stdout

def test_airflow_dag_files(tmp_path, clean_env, mlinfra):
    out = tmp_path/'dags'
    r = subprocess.run([mlinfra, 'pipeline', 'airflow', '--out', str(out), '--home', str(tmp_path/'ws')], env=clean_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    src = (out/'mlinfra_pipeline.py').read_text()
    tree = ast.parse(src)
    assert {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} == {'airflow.sdk', 'airflow.providers.standard.operators.bash'}
    assert f"CLI = '{mlinfra} run --home {tmp_path/'ws'} --steps ingest,validate,features,train,evaluate,register,deploy,monitor" in src
    assert "'retries': 2" in src and "NEEDS = {'validate': ['ingest'], 'features': ['ingest', 'validate'], 'train': ['features']" in src
    r = subprocess.run([mlinfra, 'pipeline', 'airflow', '--out', str(out), '--dag-id', 'pods', '--image', 'ghcr.io/acme/mlinfra:2.1', '--home', '/data'],
                       env=clean_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    pod = (out/'pods.py').read_text()
    compile(pod, 'pods.py', 'exec')
    assert "IMAGE = 'ghcr.io/acme/mlinfra:2.1'" in pod and "COMMAND, ARGS = ['mlinfra'], ['run', '--home', '/data'" in pod
    assert 'from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator' in pod
    assert sorted(p.name for p in out.iterdir()) == ['mlinfra_pipeline.py', 'pods.py']
