"""Performance per window on Spark (`mlinfra_nb.monitor.spark`) equals the DuckDB engine's within 1e-9 on randomized logs, on
`local[2]` and on the 2-worker standalone cluster; a log read from the lake at a commit; bad input gets the same errors.

The randomized equalities run every seed on `local[2]` (the arithmetic) and one on the cluster (the same jobs split between
two executors: `cluster_only`); each public call still runs on the cluster."""
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
@pytest.mark.cluster_only(seed=1)
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

def random_columns(seed:int, n:int, shift:float=0.0)->pd.DataFrame:
    "Every kind of column the drift tests tell apart, with ties, NaN, infinities and NULLs."
    r = np.random.default_rng(seed)
    df = pd.DataFrame({'ts': pd.Timestamp('2026-01-01') + pd.to_timedelta(r.integers(0, 4 * 86400, n), unit='s'),
                       'a': r.normal(shift, 1, n).round(1), 'b': r.integers(0, 3 + seed % 3, n), 'c': r.choice(list('xyzw'[:2 + seed % 3]), n),
                       'd': r.exponential(1 + shift, n), 'e': r.integers(0, 40, n), 'f': r.random(n) < 0.3 + shift / 4,
                       'g': r.choice([0.5, 1.5, 2.5], n)})
    df.loc[r.random(n) < 0.05, 'a'] = np.nan
    df.loc[r.random(n) < 0.02, 'd'] = np.inf
    df.loc[r.random(n) < 0.05, 'c'] = None
    return df

def same_drift(got, want):
    pd.testing.assert_frame_equal(got.columns, want.columns, check_dtype=False, rtol=1e-9, atol=1e-9)
    assert got.summary == want.summary
    pd.testing.assert_frame_equal(got.by_window, want.by_window, check_dtype=False, rtol=1e-9, atol=1e-9)
    pd.testing.assert_frame_equal(got.windows, want.windows, check_dtype=False)

@pytest.mark.parametrize('seed', range(3))
@pytest.mark.cluster_only(seed=1)
def test_drift_equals_duckdb(spark, seed):
    "Randomized data of every kind, small reference (KS, chi-square, Z) and large (Wasserstein, Jensen-Shannon on bins), whole and per window."
    from mlinfra_nb.monitor.drift import _duckdb_data_drift as duckdb_drift
    from mlinfra_nb.monitor.spark import data_drift
    for n_ref, kw in ((300 + 40 * seed, dict()), (1500, dict(timestamp='ts', window=['day', '12 hours', 'week'][seed])),
                      (800, dict(test={'numeric': 'psi', 'c': 'chisquare', 'g': 'linf'}, categorical=['e'], timestamp='ts'))):
        ref, cur = random_columns(seed, n_ref), random_columns(seed + 10, 500, shift=0.1 * seed)
        same_drift(data_drift(ref, cur, spark=spark, **kw), duckdb_drift(ref, cur, exact=True, **kw))

def test_drift_from_the_lake_and_by_settings(spark, tmp_path, monkeypatch):
    "Lake tables read at a commit; `mlinfra_nb.monitor.data_drift` called as always runs on Spark by the settings, or given Spark DataFrames."
    from mlinfra_nb.monitor import data_drift
    from mlinfra_nb.monitor.drift import _duckdb_data_drift as duckdb_drift
    lake = Lake(tmp_path/'lake'); repo = lake.create_repository('logs')
    ref, cur = random_columns(1, 400), random_columns(2, 300, 0.5)
    repo.write_table('main', 'ref', ref); repo.write_table('main', 'cur', cur); first = repo.commit('main', 'data').id
    repo.write_table('main', 'cur', random_columns(3, 50), mode='append'); repo.commit('main', 'more')
    want = duckdb_drift(ref, cur, timestamp='ts', exact=True)
    jobs = lambda: max(spark.sparkContext.statusTracker().getJobIdsForGroup(), default=-1)   # the newest job (the tracker keeps the last 1,000)
    monkeypatch.setenv('MLINFRA_MONITOR__ENGINE', 'spark')
    before = jobs()
    same_drift(data_drift((repo, first, 'ref'), (repo, first, 'cur'), timestamp='ts'), want)
    assert jobs() > before
    monkeypatch.setenv('MLINFRA_MONITOR__ENGINE', 'duckdb')
    got = data_drift(spark.createDataFrame(ref), spark.createDataFrame(cur.assign(ts=cur.ts.dt.tz_localize('UTC'))), timestamp='ts')
    pd.testing.assert_frame_equal(got.columns.drop(columns='note'), want.columns.drop(columns='note'), check_dtype=False, rtol=1e-9, atol=1e-9)

def test_drift_bad_input_gets_the_same_errors(spark):
    from mlinfra_nb.monitor.drift import _duckdb_data_drift as duckdb_drift
    from mlinfra_nb.monitor.spark import data_drift
    ref, cur = random_columns(0, 200), random_columns(1, 100)
    for kw in (dict(columns=['a', 'zz']), dict(timestamp='nope'), dict(timestamp='a'), dict(window='fortnight', timestamp='ts'),
               dict(test='ttest'), dict(drift_share=0), dict(test={'c': 'ks'}), dict(numeric=['c']), dict(categorical=['zz']),
               dict(reference=ref.assign(a=ref.a.astype(str)))):
        args = dict(reference=ref, current=cur) | kw
        with pytest.raises(InvalidInput) as duck: duckdb_drift(**args)
        with pytest.raises(InvalidInput) as sp: data_drift(**args, spark=spark)
        assert str(sp.value) == str(duck.value)
