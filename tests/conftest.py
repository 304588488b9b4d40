import os, shutil, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def mlinfra_script()->str:
    "Path of the installed `mlinfra` console script."
    exe = shutil.which('mlinfra', path=str(BIN)) or shutil.which('mlinfra')
    assert exe, "the mlinfra console script is not installed (pip install -e .)"
    return exe

def clean_environment(home:Path)->dict:
    "Environment for subprocesses: no workspace or lakeFS settings leak in from the caller; MLINFRA_HOME is `home`."
    env = {k: v for k, v in os.environ.items() if not k.startswith(('MLINFRA_', 'LAKEFS_'))}
    env['MLINFRA_HOME'] = str(home)
    env['TF_CPP_MIN_LOG_LEVEL'] = '2'
    return env

@pytest.fixture
def mlinfra(tmp_path):
    "Path of the installed `mlinfra` console script, run with a scratch workspace and cwd."
    return mlinfra_script()

@pytest.fixture
def clean_env(tmp_path):
    "Environment for subprocesses: no workspace or lakeFS settings leak in from the caller."
    return clean_environment(tmp_path/'home')

@pytest.fixture
def lake(tmp_path):
    "A fresh embedded lake (user 'tester') with a repository 'demo'; its catalog and lock are let go at teardown."
    from mlinfra_nb.lake.core import Lake
    lk = Lake(tmp_path/'lake', user='tester')
    lk.create_repository('demo')
    yield lk
    lk.store.close()

@pytest.fixture
def repo(lake):
    "The repository 'demo' of the `lake` fixture."
    return lake.repository('demo')

@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "Our lakeFS-API server over an embedded lake on 127.0.0.1, with one access key; stopped after the module."
    from mlinfra_nb.lake.core import Lake
    from mlinfra_nb.lake.server import LakeServer, create_credentials
    lake = Lake(tmp_path_factory.mktemp('served')/'lake', user='server')
    key = create_credentials(lake, 'tests')
    with LakeServer(lake) as srv: yield srv, key
    lake.store.close()

def pytest_configure(config):
    config.addinivalue_line('markers', "browser: drives JupyterLab in Debian's chromium (deselect with -m 'not browser')")
    config.addinivalue_line('markers', "slow: whole pipelines, trained models, worker processes or a Spark cluster "
                                       "(`make check` leaves them out; `make test` runs them)")
    config.addinivalue_line('markers', "cluster_only(**params): on the Spark cluster, run only the cases with these parameters "
                                       "(the others run on local[2] alone: the cluster proves distribution, not arithmetic again)")

# Modules whose tests run whole pipelines, train or serve real models, start worker processes or a Spark cluster,
# kill processes mid-write, or build a wheel: each test takes seconds to minutes. `make check` deselects them.
SLOW_MODULES = {'test_pipeline', 'test_pipeline_airflow', 'test_pipeline_lakefs', 'test_demo', 'test_package_install',
                'test_browser', 'test_train_multiworker', 'test_train_resume', 'test_features_spark', 'test_monitor_spark',
                'test_lake_faults', 'test_serve_flags', 'test_serve_server', 'test_quiet_tensorflow',
                'test_lake_table_concurrency'}
# ...and single tests elsewhere that train a model, run the pipeline, start processes (the CLI, workers, kill -9) or
# stress a lake at scale: each takes seconds, most of `make check`'s time before they were listed here.
SLOW_TESTS = {'test_foundation::test_runs_write_into_workspace', 'test_foundation::test_runs_default_to_dot_mlinfra',
              'test_lake_server_clients::test_pipeline_switches_backend_by_configuration',
              'test_registry_backends::test_train_register_load', 'test_registry_backends::test_concurrent_registrations_get_distinct_versions',
              'test_lake_concurrency::test_processes_commit_merge_and_cas_concurrently',
              'test_lake_concurrency::test_threads_share_a_lake_and_separate_lakes',
              'test_lake_concurrency::test_busy_process_does_not_starve_another', 'test_lake_server_bad_inputs::test_fuzz',
              'test_lake_server_bad_inputs::test_cli_prints_the_real_port',
              'test_lake_server_bad_inputs::test_cli_refuses_unasked_for_addresses',
              'test_lake_server_clients::test_serve_command', 'test_lake_import::test_kill9_mid_import_keeps_committed_data',
              'test_features_pit_plans::test_entity_columns_come_back_in_row_order_at_scale'}   # module::test

def left_off_the_cluster(item)->bool:
    "Whether `item` runs on the Spark cluster with parameters other than its `cluster_only` marker names."
    marker, params = item.get_closest_marker('cluster_only'), getattr(getattr(item, 'callspec', None), 'params', {})
    if marker is None or params.get('spark') != 'cluster': return False
    unknown = set(marker.kwargs) - set(params)
    assert not unknown, f"{item.nodeid}: cluster_only names parameters the test does not have: {sorted(unknown)}"
    return any(params[k] != v for k, v in marker.kwargs.items())

def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition('.')[2]
        if module in SLOW_MODULES or f'{module}::{item.originalname}' in SLOW_TESTS: item.add_marker(pytest.mark.slow)
    if (off := [item for item in items if left_off_the_cluster(item)]):
        config.hook.pytest_deselected(items=off)
        items[:] = [item for item in items if not left_off_the_cluster(item)]

# the Spark engine's tests: a session on local[2] and on a 2-worker standalone cluster (tests/spark_cluster.py)
from spark_cluster import spark, spark_cluster  # noqa: E402,F401
