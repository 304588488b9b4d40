"""The pipeline as an Airflow DAG, run by a real Airflow 3 (its own venv, `.venv-airflow`, made by `make test`): the tasks call
`mlinfra run --run-id <Airflow's run id> --only STEP`, a failed task leaves `main` untouched and its downstream tasks
`upstream_failed`, and after the fix `airflow tasks clear` of the failed tasks, then the cleared DAG run resumed as a scheduler
resumes it, finishes and merges exactly once. Also: two workers on one run."""
import ast, json, os, subprocess, sys, time, warnings
from pathlib import Path
import pytest
from mlinfra_nb.datasets import transactions
from mlinfra_nb.pipeline import Pipeline, airflow_dag, run_key
from mlinfra_nb.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_BIN = ROOT/'.venv-airflow'/'bin'

# Runs one DAG run the way `airflow dags test` does (one process, no scheduler), with a fixed `run_after`, so that running it
# again re-runs the same DAG run (same run id: `dag.test` clears its task instances and runs them again) rather than starting
# another; prints the run id; exits 0 only when the DAG run ends `success`.
DRIVER = """
import datetime as dt, json, runpy, sys
import airflow
dag = runpy.run_path(sys.argv[1])['dag']
when = dt.datetime.fromisoformat(sys.argv[2])
dr = dag.test(run_after=when, logical_date=when, run_conf=json.loads(sys.argv[3]))
print('RUN_ID', dr.run_id, dr.state)
sys.exit(0 if str(dr.state) in ('success', 'DagRunState.SUCCESS') else 1)
"""

# What a scheduler does with a DAG run that `airflow tasks clear` set back to `queued`, without a scheduler: start it (running),
# then, as `dag.test` does for its own run, schedule the task instances whose upstreams are done and run them in this process,
# until the run ends. Unlike `dag.test`, it does not delete and re-create the run: the cleared run itself is resumed.
RESUME = """
import json, runpy, sys
from sqlalchemy import select
from airflow import settings
from airflow.models.dagrun import DagRun
from airflow.sdk.definitions.dag import _run_task
from airflow.serialization.serialized_objects import DagSerialization
from airflow.utils.state import DagRunState, TaskInstanceState
dag = runpy.run_path(sys.argv[1])['dag']
session = settings.Session()
dr = session.scalar(select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == sys.argv[2]))
print('CLEARED_RUN_STATE', dr.state)
dr.dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
dr.state = DagRunState.RUNNING
session.commit()
while dr.state == DagRunState.RUNNING:
    session.expire_all()
    schedulable, _ = dr.update_state(session=session)
    for ti in schedulable:
        ti.try_number += 1; ti.state = TaskInstanceState.SCHEDULED
    session.commit()
    for ti in [t for t in dr.get_task_instances(session=session) if t.state == TaskInstanceState.SCHEDULED]:
        try: _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
        except Exception as e: print('TASK_FAILED', ti.task_id, e)
print('RUN_ID', dr.run_id, dr.state)
sys.exit(0 if str(dr.state) in ('success', 'DagRunState.SUCCESS') else 1)
"""

@pytest.fixture(scope='module')
def airflow_venv():
    "The Airflow venv's bin folder; made with `make .venv-airflow/.ok` if missing. Skips, loudly, where Airflow cannot be installed."
    if not (AIRFLOW_BIN/'airflow').exists():
        subprocess.run(['make', '-C', str(ROOT), '.venv-airflow/.ok'], capture_output=True, text=True, timeout=1800)
    if not (AIRFLOW_BIN/'airflow').exists():
        msg = "AIRFLOW TESTS SKIPPED: .venv-airflow could not be created on this machine (see `make .venv-airflow/.ok`)"
        print(f"\n{'!' * 20} {msg} {'!' * 20}", file=sys.stderr); warnings.warn(msg)
        pytest.skip(msg)
    return AIRFLOW_BIN

@pytest.fixture
def airflow(tmp_path, airflow_venv, clean_env):
    "Run the `airflow` CLI (or a python in the Airflow venv) with a fresh AIRFLOW_HOME, its own dags folder and a migrated SQLite db."
    dags = tmp_path/'dags'; dags.mkdir()
    env = {**clean_env, 'AIRFLOW_HOME': str(tmp_path/'airflow'), 'AIRFLOW__CORE__DAGS_FOLDER': str(dags), 'AIRFLOW__CORE__LOAD_EXAMPLES': 'False',
           'PYTHONPATH': os.pathsep.join([str(ROOT), *filter(None, [clean_env.get('PYTHONPATH')])])}   # the tasks' `mlinfra` imports this checkout
    def run(*argv, python=False, timeout=600):
        exe = [str(airflow_venv/'python')] if python else [str(airflow_venv/'airflow')]
        return subprocess.run([*exe, *argv], env=env, capture_output=True, text=True, timeout=timeout)
    r = run('db', 'migrate')
    assert r.returncode == 0, r.stderr[-3000:]
    run.dags, run.env = dags, env
    return run

def task_states(airflow, dag_id:str, run_id:str)->dict:
    r = airflow('tasks', 'states-for-dag-run', dag_id, run_id, '-o', 'json')
    assert r.returncode == 0, r.stderr[-3000:]
    return {t['task_id']: t['state'] for t in json.loads(r.stdout[r.stdout.index('['):])}

def test_dag_fails_without_merging_then_finishes_once(tmp_path, airflow):
    home = tmp_path/'home'
    pipe = Pipeline(Workspace(home, env={}))
    main_before = pipe.repo.head('main').id
    src = airflow_dag(['ingest', 'validate', 'features'], dag_id='mlinfra_test', home=home, retries=0)
    tree = ast.parse(src)
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and 'mlinfra' in ast.unparse(n)]   # calls the CLI only
    (airflow.dags/'mlinfra_test.py').write_text(src)
    driver = tmp_path/'driver.py'; driver.write_text(DRIVER)
    landing = tmp_path/'landing.csv'                                # where the events arrive; not there yet: ingest fails
    conf = json.dumps({'source': str(landing), 'valid_days': 2.0})
    t0 = time.monotonic()
    r = airflow(str(driver), str(airflow.dags/'mlinfra_test.py'), '2026-12-01T00:00:00+00:00', conf, python=True)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    run_id = r.stdout.split('RUN_ID ')[1].split()[0]
    assert run_id.startswith('manual__2026-12-01T00:00:00'), run_id
    test_states = task_states(airflow, 'mlinfra_test', run_id)
    assert test_states == {'ingest': 'failed', 'validate': 'upstream_failed', 'features': 'upstream_failed', 'finish': 'upstream_failed'}, test_states
    rec = pipe.info(run_id)                                         # Airflow's run id, as it is
    assert (rec['status'], rec['failed_step'], rec['branch']) == ('failed', 'ingest', f'run-{run_key(run_id)}')
    assert 'does not exist' in rec['error'], rec['error']
    assert pipe.repo.head('main').id == main_before and not pipe.repo.tables('main')     # main untouched
    transactions(700, seed=3).to_csv(landing, index=False)        # the fix: the events arrive
    day = '2026-12-01T00:00:00+00:00'                              # the run's logical date: clear filters on it
    r = airflow('tasks', 'clear', 'mlinfra_test', '--only-failed', '-s', day, '-e', day, '-y')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert task_states(airflow, 'mlinfra_test', run_id) == dict.fromkeys(['ingest', 'validate', 'features', 'finish'], '')   # cleared: no state
    runs = airflow('dags', 'list-runs', 'mlinfra_test', '-o', 'json')
    assert [(x['run_id'], x['state']) for x in json.loads(runs.stdout[runs.stdout.index('[{'):])] == [(run_id, 'queued')], runs.stdout
    resume = tmp_path/'resume.py'; resume.write_text(RESUME)
    r = airflow(str(resume), str(airflow.dags/'mlinfra_test.py'), run_id, python=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'CLEARED_RUN_STATE queued' in r.stdout and r.stdout.split('RUN_ID ')[1].split()[0] == run_id   # the cleared run, resumed
    assert task_states(airflow, 'mlinfra_test', run_id) == dict.fromkeys(['ingest', 'validate', 'features', 'finish'], 'success')
    rec = pipe.info(run_id)
    merges = [c.id for c in pipe.repo.log('main') if c.metadata.get('pipeline_run') == run_id]
    assert rec['status'] == 'succeeded' and merges == [rec['merge_commit']] == [pipe.repo.head('main').id], (rec, merges)
    assert pipe.repo.table('main', 'tables/transactions').count('*').fetchall()[0][0] == 700
    assert {'features/train', 'features/valid'} <= set(pipe.repo.tables('main'))
    ev = pipe._events(run_id)
    assert list(ev[ev.step == 'ingest'].status) == ['running', 'failed', 'running', 'succeeded']   # ingest ran twice, the others once
    assert list(ev[ev.step == 'validate'].status) == ['running', 'succeeded']
    again = airflow(str(driver), str(airflow.dags/'mlinfra_test.py'), '2026-12-01T00:00:00+00:00', conf, python=True)
    assert again.returncode == 0, again.stderr[-3000:]                 # the whole DAG run once more: every task a no-op
    assert [c.id for c in pipe.repo.log('main') if c.metadata.get('pipeline_run') == run_id] == merges == [pipe.repo.head('main').id]
    assert len(pipe._events(run_id)) == len(ev)
    print(f"three Airflow DAG runs (failed, fixed, again) in {time.monotonic() - t0:.0f} s")

# Loads the DAG files of a folder as Airflow's DAG processor does, renders each task's templated arguments for one run and builds
# its pod (dry run: no cluster); prints what it found as JSON.
PODS = """
import json, sys
from types import SimpleNamespace
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags[sys.argv[2]]
out = {'import_errors': {k: str(v) for k, v in bag.import_errors.items()}, 'tasks': {}}
for t in dag.tasks:
    t.arguments = t.render_template(t.arguments, {'run_id': sys.argv[3], 'dag_run': SimpleNamespace(conf=json.loads(sys.argv[4]))}, dag.get_template_env())
    c = t.build_pod_request_obj(dry_run=True).spec.containers[0]
    out['tasks'][t.task_id] = {'operator': type(t).__name__, 'image': c.image, 'command': c.command, 'args': c.args, 'upstream': sorted(t.upstream_task_ids)}
print('PODS', json.dumps(out))
"""

def test_kubernetes_pod_dag_imports_and_builds_its_pods(tmp_path, airflow):
    "The `--image` variant (KubernetesPodOperator tasks) loads in Airflow with the cncf.kubernetes provider; each pod runs our CLI on the run's id and conf."
    has = lambda: airflow('-c', 'import airflow.providers.cncf.kubernetes.operators.pod', python=True).returncode == 0
    if not has(): subprocess.run(['make', '-C', str(ROOT), '.venv-airflow/.k8s'], capture_output=True, text=True, timeout=1800)
    if not has():
        msg = "KUBERNETES POD DAG TEST SKIPPED: the cncf.kubernetes provider could not be installed into .venv-airflow (see `make .venv-airflow/.k8s`)"
        print(f"\n{'!' * 20} {msg} {'!' * 20}", file=sys.stderr); warnings.warn(msg)
        pytest.skip(msg)
    (airflow.dags/'pods.py').write_text(airflow_dag(['ingest', 'validate', 'features'], dag_id='pods', image='ghcr.io/acme/mlinfra:2.1', home='/data'))
    probe = tmp_path/'pods_probe.py'; probe.write_text(PODS)
    run_id = 'manual__2026-12-01T00:00:00+00:00'
    r = airflow(str(probe), str(airflow.dags), 'pods', run_id, json.dumps({'rows': 700}), python=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    found = json.loads(r.stdout.split('PODS ', 1)[1].splitlines()[0])
    assert found['import_errors'] == {}, found['import_errors']
    tasks = found['tasks']
    assert set(tasks) == {'ingest', 'validate', 'features', 'finish'} and {t['operator'] for t in tasks.values()} == {'KubernetesPodOperator'}
    base = ['run', '--home', '/data', '--steps', 'ingest,validate,features', '--run-id', run_id, '--conf', '{"rows": 700}']
    assert {k: (t['image'], t['command'], t['args']) for k, t in tasks.items()} == {
        **{s: ('ghcr.io/acme/mlinfra:2.1', ['mlinfra'], [*base, '--only', s]) for s in ('ingest', 'validate', 'features')},
        'finish': ('ghcr.io/acme/mlinfra:2.1', ['mlinfra'], [*base, '--finish'])}
    assert {k: t['upstream'] for k, t in tasks.items()} == {'ingest': [], 'validate': ['ingest'], 'features': ['ingest', 'validate'],
                                                           'finish': ['features', 'ingest', 'validate']}
