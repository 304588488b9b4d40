"""Performance per window on Spark (`mlinfra_nb.monitor.spark`) equals the DuckDB engine's within 1e-9 on randomized logs, on
`local[2]` and on the 2-worker standalone cluster; a log read from the lake at a commit; bad input gets the same errors."""
import numpy as np, pandas as pd, pytest
from mlinfra_nb.workspace import InvalidInput
from mlinfra_nb.lake import Lake
from mlinfra_nb.monitor.performance import _duckdb_performance as duckdb_performance   # the DuckDB engine itself

def random_log(seed:int, n:int=600)->pd.DataFrame:
    "Predictions over two weeks, rounded so ties are common, some labels missing (not in yet) and some NaN."
    rng = np.random.default_rng(seed)
    log = pd.DataFrame({'ts': pd.Timestamp('2025-12-28') + pd.to_timedelta(rng.integers(0, 14 * 86400, n), unit='s'),
                        'prediction': rng.random(n).round(1), 'label': rng.integers(0, 2, n).astype(float)})
    log.loc[rng.random(n) < 0.15, 'label'] = np.nan
    return log

@pytest.mark.parametrize('seed', range(3))
def test_performance_equals_duckdb(spark, seed):
    from mlinfra_nb.monitor.spark import performance
    log = random_log(seed)
    sdf = spark.createDataFrame(log)
    for task, window, thr in (('binary', '1d', 0.5), ('binary', '1w', 0.3), ('binary', None, 0.5), ('regression', '6h', 0.5), ('regression', None, 0.5)):
        want = duckdb_performance(log, task, window, threshold=thr)
        got = performance(sdf, task, window, threshold=thr)
        assert list(got.columns) == list(want.columns) and len(got) == len(want)
        pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-9, atol=1e-9)

def test_a_log_from_the_lake(spark, tmp_path):
    from mlinfra_nb.features.spark import read_table
    from mlinfra_nb.monitor.spark import performance
    lake = Lake(tmp_path/'lake'); repo = lake.create_repository('logs')
    repo.write_table('main', 'predictions', random_log(7)); first = repo.commit('main', 'a day of predictions').id
    repo.write_table('main', 'predictions', random_log(8), mode='append'); repo.commit('main', 'another')
    got = performance(read_table(spark, repo, first, 'predictions'), 'binary', '1d')
    pd.testing.assert_frame_equal(got, duckdb_performance(random_log(7), 'binary', '1d'), check_dtype=False, rtol=1e-9, atol=1e-9)

def test_bad_input_gets_the_same_errors(spark):
    from mlinfra_nb.monitor.spark import performance
    log = random_log(1)
    for kw in (dict(prediction='score'), dict(task='ranking'), dict(window='fortnight'), dict(data=log.assign(label=3.0))):
        args = dict(data=log) | kw
        with pytest.raises(InvalidInput) as duck: duckdb_performance(**args)
        with pytest.raises(InvalidInput) as sp: performance(**{**args, 'data': spark.createDataFrame(args['data'])})
        assert str(sp.value) == str(duck.value)

def test_engine_chosen_by_settings(spark, monkeypatch):
    "`mlinfra_nb.monitor.performance`, called as always on pandas, runs on Spark when the settings say so (or given a Spark DataFrame)."
    from mlinfra_nb.monitor import performance
    log = random_log(4)
    want = duckdb_performance(log, 'binary', '1d')
    jobs = lambda: len(spark.sparkContext.statusTracker().getJobIdsForGroup())
    before = jobs()
    monkeypatch.setenv('MLINFRA_MONITOR__ENGINE', 'spark')
    pd.testing.assert_frame_equal(performance(log, 'binary', '1d'), want, check_dtype=False, rtol=1e-9, atol=1e-9)
    assert jobs() > before                                   # Spark ran it
    monkeypatch.setenv('MLINFRA_MONITOR__ENGINE', 'duckdb')
    pd.testing.assert_frame_equal(performance(spark.createDataFrame(log), 'binary', '1d'), want, check_dtype=False, rtol=1e-9, atol=1e-9)
