"""`mlinfra run` killed with SIGKILL at any point never leaves `main` half-merged, and `--resume` finishes the run exactly once;
step parameters never reach SQL as text."""
import contextlib, os, signal, subprocess, time
import pytest
from mlinfra_nb.pipeline import STOP_AT, Pipeline
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
