"Drift statistics (`mlinfra_nb.monitor.drift`) against scipy, Evidently's default-test rule, windows and bad inputs."
import datetime as dt
import duckdb, numpy as np, pandas as pd, pyarrow as pa, pytest
from scipy import stats
from scipy.spatial import distance
from mlinfra_nb.workspace import InvalidInput
from mlinfra_nb.monitor import drift as D
from mlinfra_nb.monitor.drift import data_drift, default_test

TOL = 1e-6

@pytest.fixture(autouse=True)
def fresh_rng():
    "Each test draws its data from a generator of its own, so its data never depend on which tests ran before it in its worker."
    global rng
    rng = np.random.default_rng(7)

# ---------------------------------------------------------------------------------------------------------------
# an exact reference implementation (Evidently's formulas, in numpy/scipy)

def freqs(r, c, keys):
    r, c = pd.Series(r), pd.Series(c)
    rc, cc = r.value_counts(), c.value_counts()
    return np.array([rc.get(k, 0) / len(r) for k in keys]), np.array([cc.get(k, 0) / len(c) for k in keys])

def binned(r, c, numeric):
    "Evidently's get_binned_data without zero filling."
    r, c = np.asarray(r), np.asarray(c)
    if numeric and len(np.unique(r)) > 20:
        edges = np.histogram_bin_edges(np.concatenate([r, c]), bins='sturges')
        return np.histogram(r, edges)[0] / len(r), np.histogram(c, edges)[0] / len(c)
    return freqs(r, c, sorted(set(r) | set(c)))

def fill(p):
    p = p.copy(); m = p[p > 0].min()
    p[p == 0] = m / 1e6 if m <= 1e-4 else 1e-4
    return p

def expected(test, r, c, numeric=True):
    "(statistic, score) of `test` on samples `r`, `c`, as scipy/Evidently compute it."
    r, c = np.asarray(r), np.asarray(c)
    if test == 'ks':
        res = stats.ks_2samp(r, c); return res.statistic, res.pvalue
    if test == 'wasserstein':
        v = stats.wasserstein_distance(r, c) / max(float(np.std(r)), 0.001); return v, v
    if test == 'jensenshannon':
        v = distance.jensenshannon(*binned(r, c, numeric)); return v, v
    if test == 'psi':
        p, q = (fill(x) for x in binned(r, c, numeric)); v = np.sum((p - q) * np.log(p / q)); return v, v
    if test == 'linf':
        v = np.abs(np.subtract(*binned(r, c, numeric))).max(); return v, v
    keys = sorted(set(r) | set(c))
    if test == 'chisquare':
        rc, cc = pd.Series(r).value_counts(), pd.Series(c).value_counts()
        res = stats.chisquare([cc.get(k, 0) for k in keys], [rc.get(k, 0) * len(c) / len(r) for k in keys]); return res.statistic, res.pvalue
    if test == 'z':
        if len(keys) == 1: return 0.0, 1.0
        p1, p2 = (r != keys[0]).mean(), (c != keys[0]).mean()
        P = (p1 * len(r) + p2 * len(c)) / (len(r) + len(c))
        z = (p1 - p2) / np.sqrt(P * (1 - P) * (1 / len(r) + 1 / len(c)))
        return z, 2 * (1 - stats.norm.cdf(abs(z)))
    raise ValueError(test)

def run(r, c, test, kind='numeric', **kw):
    "Our exact (statistic, score, row) for one column (tests/test_drift_two_stage.py checks the sketched scores' bounds)."
    kw.setdefault('exact', True)
    ref, cur = pd.DataFrame({'v': r}), pd.DataFrame({'v': c})
    res = data_drift(ref, cur, test=test, con=duckdb.connect(), **({'categorical': ['v']} if kind == 'categorical' else {}), **kw)
    row = res.columns.iloc[0]
    return row.statistic, row.score, row

# ---------------------------------------------------------------------------------------------------------------
# every statistic against scipy

rng = np.random.default_rng(7)
NUMERIC_CASES = {
    'normal shift': (rng.normal(size=800), rng.normal(0.3, 1.2, size=600)),
    'ties (rounded)': (np.round(rng.normal(size=900), 1), np.round(rng.normal(0.1, size=700), 1)),
    'negative, wide range': (-np.exp(rng.normal(3, 2, 500)), -np.exp(rng.normal(3.2, 2, 450))),
    'very different sizes': (rng.standard_t(3, 3000), rng.standard_t(3, 37)),
    'small current': (rng.uniform(-5, 5, 200), rng.uniform(-4, 6, 3)),
    'integers (many)': (rng.poisson(30, 1500).astype(float), rng.poisson(33, 1200).astype(float)),
    'offset 1e6': (1e6 + rng.normal(size=400), 1e6 + rng.normal(0.2, size=500)),
}

@pytest.mark.parametrize('case', NUMERIC_CASES)
@pytest.mark.parametrize('test', ['ks', 'wasserstein', 'jensenshannon', 'psi', 'linf'])
def test_numeric_statistics_match_scipy(case, test):
    r, c = NUMERIC_CASES[case]
    stat, score, _ = run(r, c, test)
    es, esc = expected(test, r, c)
    assert stat == pytest.approx(es, abs=TOL, rel=TOL) and score == pytest.approx(esc, abs=TOL, rel=TOL)

CAT_CASES = {
    'three': (rng.choice(list('abc'), 700, p=[.5, .3, .2]), rng.choice(list('abc'), 400, p=[.4, .3, .3])),
    'many, sizes differ': (rng.choice([f'k{i}' for i in range(30)], 5000), rng.choice([f'k{i}' for i in range(25)], 90)),
    'binary': (rng.choice(['no', 'yes'], 600, p=[.8, .2]), rng.choice(['no', 'yes'], 300, p=[.7, .3])),
}

@pytest.mark.parametrize('case', CAT_CASES)
@pytest.mark.parametrize('test', ['chisquare', 'z', 'jensenshannon', 'psi', 'linf'])
def test_categorical_statistics_match_scipy(case, test):
    r, c = CAT_CASES[case]
    if test == 'z' and case != 'binary': pytest.skip('Z is for two values')
    stat, score, _ = run(r, c, test, 'categorical')
    es, esc = expected(test, r, c, numeric=False)
    assert stat == pytest.approx(es, abs=TOL, rel=TOL) and score == pytest.approx(esc, abs=TOL, rel=TOL)

@pytest.mark.filterwarnings("ignore:divide by zero")
def test_small_numeric_values_use_value_frequencies():
    r, c = rng.integers(0, 4, 500).astype(float), rng.integers(0, 5, 400).astype(float)
    for test in ('chisquare', 'jensenshannon', 'psi'):
        stat, score, row = run(r, c, test)
        assert score == pytest.approx(expected(test, r, c)[1], abs=TOL)
    assert run(r, c, 'chisquare')[2].note.startswith('1 value(s) not in the reference')  # 4.0 is new: chi-square is infinite

def test_both_numeric_plans_agree():
    "The merged plan (few windows) and the ASOF plan (many windows) give the same numbers."
    for r, c in NUMERIC_CASES.values():
        con = duckdb.connect()
        rv, cv = D._register(con, pd.DataFrame({'x': r}), 'reference'), D._register(con, pd.DataFrame({'x': c}), 'current')
        a = D._numeric_stats(con, *D._numeric_tables(con, rv, cv, 'x', None)).iloc[0]
        b = D._merged_stats(con, rv, cv, 'x', None).iloc[0]
        for k in ('n_reference', 'n_current', 'n_values', 'ref_values', 'lo', 'hi'): assert a[k] == b[k], k
        for k in ('ks', 'wasserstein', 'ref_std'): assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k

def test_ks_pvalue_asymptotic_for_large_samples():
    r, c = rng.normal(size=900), rng.normal(0.05, size=30000)
    _, score, row = run(r, c, 'ks')
    assert row.test == 'ks' and score == pytest.approx(stats.ks_2samp(r, c).pvalue, abs=1e-9)

# ---------------------------------------------------------------------------------------------------------------
# the default test, as Evidently picks it

@pytest.mark.parametrize('kind,nr,nv,want', [
    ('numeric', 1000, 6, 'ks'), ('numeric', 1000, 5, 'chisquare'), ('numeric', 1000, 3, 'chisquare'), ('numeric', 1000, 2, 'z'),
    ('numeric', 1001, 6, 'wasserstein'), ('numeric', 1001, 5, 'jensenshannon'), ('numeric', 10**6, 2, 'jensenshannon'),
    ('categorical', 1000, 3, 'chisquare'), ('categorical', 1000, 2, 'z'), ('categorical', 1001, 2, 'jensenshannon'),
    ('categorical', 1001, 50, 'jensenshannon')])
def test_default_test_matrix(kind, nr, nv, want): assert default_test(kind, nr, nv) == want

def test_default_test_from_data_and_kinds():
    n = 1200
    ref = pd.DataFrame({'f': rng.normal(size=n), 'code': rng.integers(0, 4, n), 'count': rng.poisson(40, n), 's': rng.choice(list('ab'), n),
                        'flag': rng.choice([True, False], n)})
    res = data_drift(ref, ref.sample(frac=1, random_state=1), con=duckdb.connect()).columns.set_index('column')
    assert res.type.to_dict() == dict(f='numeric', code='categorical', count='numeric', s='categorical', flag='categorical')
    assert res.test.to_dict() == dict(f='wasserstein', code='jensenshannon', count='wasserstein', s='jensenshannon', flag='jensenshannon')
    small = data_drift(ref.head(1000), ref.tail(300), con=duckdb.connect()).columns.set_index('column')
    assert small.test.to_dict() == dict(f='ks', code='chisquare', count='ks', s='z', flag='z')
    assert not res.drifted.any()

def test_thresholds_by_column_and_test_and_verdict():
    n = 30_000   # the scores sit 0.05 from the thresholds: with 3,000 rows, ~1 seed in 14 crossed one
    ref = pd.DataFrame({f'x{i}': rng.normal(size=n) for i in range(4)})
    cur = pd.DataFrame({f'x{i}': rng.normal(0.15 * i, size=n) for i in range(4)})   # normed Wasserstein ~0, .15, .3, .45
    res = data_drift(ref, cur, con=duckdb.connect())
    assert res.drifted == ['x1', 'x2', 'x3'] and res.summary['share_drifted'] == 0.75 and res.summary['dataset_drift']
    res = data_drift(ref, cur, threshold={'wasserstein': 0.2, 'x3': 0.5}, drift_share=0.5, con=duckdb.connect())
    assert res.drifted == ['x2'] and res.summary['share_drifted'] == 0.25 and not res.summary['dataset_drift']
    assert res.columns.threshold.tolist() == [0.2, 0.2, 0.2, 0.5]
    res = data_drift(ref, cur, threshold=0.35, drift_share=0.25, con=duckdb.connect())
    assert res.drifted == ['x3'] and res.summary['dataset_drift']  # share 0.25 >= 0.25
    with pytest.raises(InvalidInput, match='drift_share'): data_drift(ref, cur, drift_share=0)

# ---------------------------------------------------------------------------------------------------------------
# windows

def windowed_data(days=(0, 1, 2, 3), rows=400, tz=None):
    n = len(days) * rows
    ts = pd.Timestamp('2024-05-01', tz=tz) + pd.to_timedelta(np.repeat(days, rows), unit='D') + pd.to_timedelta(rng.integers(0, 86_400, n), unit='s')
    cur = pd.DataFrame({'ts': ts, 'x': rng.normal(np.where(np.repeat(days, rows) >= 2, 0.5, 0.0), size=n),
                        'k': rng.choice(list('abcd'), n), 'y': np.round(rng.normal(size=n), 1)})
    ref = pd.DataFrame({'x': rng.normal(size=2500), 'k': rng.choice(list('abcd'), 2500), 'y': np.round(rng.normal(size=2500), 1)})
    return ref, cur

@pytest.mark.parametrize('many', [False, True])
def test_windows_equal_separate_runs(many, monkeypatch):
    if many: monkeypatch.setattr(D, 'MERGE_MAX_WINDOWS', 0)  # force the ASOF plan
    ref, cur = windowed_data(rows=2000)   # 400 rows a day: an undrifted day crossed the 0.1 threshold for ~1 seed in 10
    res = data_drift(ref, cur, timestamp='ts', window='day', con=duckdb.connect())
    assert len(res.windows) == 4 and res.windows.n_current.tolist() == [2000] * 4
    x = res.by_window[res.by_window.column == 'x']
    assert x.drifted.tolist() == [False, False, True, True] and x.test.eq('wasserstein').all()   # x shifts from day 3
    for day, got in res.by_window.groupby('window'):
        alone = data_drift(ref, cur[cur.ts.dt.floor('D') == day].drop(columns='ts'), con=duckdb.connect()).columns
        pd.testing.assert_frame_equal(got.drop(columns='window').reset_index(drop=True), alone, check_exact=False, rtol=1e-9, atol=1e-12)
    whole = data_drift(ref, cur.drop(columns='ts'), con=duckdb.connect()).columns
    pd.testing.assert_frame_equal(res.columns, whole, check_exact=False, rtol=1e-9, atol=1e-12)

def test_custom_window_tz_and_gaps():
    ref, cur = windowed_data(days=(0, 3), tz='UTC')
    res = data_drift(ref, cur, timestamp='ts', window=dt.timedelta(hours=12), con=duckdb.connect())
    w = res.windows
    assert w.window.iloc[0] == pd.Timestamp('2024-05-01', tz='UTC') and w.window.diff().dropna().eq(pd.Timedelta('12h')).all()
    assert (w.note == 'no data').sum() == len(w) - 4 and (w.n_current[w.note == 'no data'] == 0).all()
    assert w.n_current.sum() == len(cur)
    res6 = data_drift(ref, cur, timestamp='ts', window='6 hours', con=duckdb.connect())
    assert res6.windows.n_current.sum() == len(cur) and res6.windows.window.diff().dropna().eq(pd.Timedelta('6h')).all()
    with pytest.raises(InvalidInput, match="window must be"): data_drift(ref, cur, timestamp='ts', window='biweekly')
    with pytest.raises(InvalidInput, match="no timestamp column 'when'"): data_drift(ref, cur, timestamp='when')
    with pytest.raises(InvalidInput, match="not a timestamp"): data_drift(ref, cur, timestamp='x')

def test_single_row_window_and_null_timestamps():
    ref, cur = windowed_data(days=(0,))
    cur = pd.concat([cur, cur.head(1).assign(ts=pd.Timestamp('2024-05-02 10:00')), cur.head(3).assign(ts=pd.NaT)], ignore_index=True)
    res = data_drift(ref, cur, timestamp='ts', con=duckdb.connect())
    one = res.by_window[res.by_window.window == '2024-05-02']
    assert len(one) == 3 and one.score.notna().all() and one.n_current.eq(1).all()
    r, c = ref.x.to_numpy(), cur.x.to_numpy()[-4:-3]
    x = one.set_index('column')
    assert x.score_low['x'] <= expected('wasserstein', r, c)[1] <= x.score_high['x']   # sketched: the exact score is within the bounds
    ex = data_drift(ref, cur, timestamp='ts', con=duckdb.connect(), exact=True).by_window
    assert ex[ex.window == '2024-05-02'].set_index('column').score['x'] == pytest.approx(expected('wasserstein', r, c)[1], abs=TOL)
    assert res.summary['n_current_rows'] == len(cur)  # rows without a timestamp count in the whole, in no window

# ---------------------------------------------------------------------------------------------------------------
# bad inputs

def test_all_null_columns_are_reported_not_drifted():
    ref = pd.DataFrame({'x': rng.normal(size=50), 'e': np.nan, 'k': rng.choice(list('ab'), 50)})
    cur = pd.DataFrame({'x': [np.nan] * 40, 'e': rng.normal(size=40), 'k': [None] * 40})
    res = data_drift(ref, cur, con=duckdb.connect())
    c = res.columns.set_index('column')
    assert not c.drifted.any() and c.test.isna().all()
    assert c.note.to_dict() == {'x': 'no values in the current data (all null)', 'e': 'no values in the reference (all null)',
                                'k': 'no values in the current data (all null)'}
    assert res.summary['n_tested'] == 0 and res.summary['dataset_drift'] is False and res.summary['share_drifted'] == 0.0

def test_null_and_infinite_values_are_dropped_as_evidently_does():
    r, c = rng.normal(size=300), rng.normal(0.2, size=200)
    rr, cc = np.r_[r, np.nan, np.inf], np.r_[c, -np.inf, np.nan, np.nan]
    _, score, row = run(rr, cc, 'ks')
    assert row.n_reference == 300 and row.n_current == 200 and score == pytest.approx(expected('ks', r, c)[1], abs=TOL)

def test_unseen_categories():
    r, c = rng.choice(list('abc'), 400), rng.choice(list('abcd'), 300)
    for test in ('chisquare', 'jensenshannon', 'psi', 'linf'):
        stat, score, row = run(r, c, test, 'categorical')
        assert np.isfinite(score) and row.note.startswith('1 value(s) not in the reference')
        assert score == pytest.approx(expected(test, r, c, numeric=False)[1], abs=TOL) if test != 'chisquare' else score == 0.0
    assert run(r, c, 'chisquare', 'categorical')[2].drifted and np.isinf(run(r, c, 'chisquare', 'categorical')[0])

def test_constant_columns():
    const = np.full(2000, 3.0)
    _, score, row = run(const, const, 'wasserstein')
    assert score == 0.0 and not row.drifted and 'normalised by 0.001' in row.note
    _, score, row = run(const, const + 0.01, 'wasserstein')
    assert score == pytest.approx(0.01 / 0.001) and row.drifted       # Evidently's floor for the std
    row = run(const, const, None)[2]
    assert row.test == 'jensenshannon' and row.score == 0.0 and not row.drifted
    row = run(const[:10], const[:5], None)[2]
    assert row.test == 'z' and row.score == 1.0 and not row.drifted

def test_schema_mismatch():
    ref = pd.DataFrame({'a': [1.0, 2.0], 'b': ['x', 'y'], 'only_ref': [1, 2]})
    cur = pd.DataFrame({'a': [1.5], 'b': ['x'], 'only_cur': [3]})
    res = data_drift(ref, cur, con=duckdb.connect())
    assert res.columns.column.tolist() == ['a', 'b']
    assert res.summary['only_in_reference'] == ['only_ref'] and res.summary['only_in_current'] == ['only_cur']
    with pytest.raises(InvalidInput, match=r"column\(s\) \['only_ref'\] not in the current data"): data_drift(ref, cur, columns=['a', 'only_ref'])
    with pytest.raises(InvalidInput, match="column 'a' is DOUBLE in the reference but VARCHAR"): data_drift(ref, cur.assign(a='1.5'))
    assert data_drift(ref, cur.assign(a='1.5'), categorical=['a'], con=duckdb.connect()).columns.type.tolist() == ['categorical', 'categorical']
    with pytest.raises(InvalidInput, match='no columns to compare'): data_drift(pd.DataFrame({'p': [1]}), pd.DataFrame({'q': [1]}))
    with pytest.raises(InvalidInput, match="test 'wasserstein' is for numeric columns"): data_drift(ref, cur, test={'b': 'wasserstein'})
    with pytest.raises(InvalidInput, match='must be a DuckDB relation'): data_drift(ref, {'a': [1]})
    ts = pd.DataFrame({'a': [1.0], 't': pd.to_datetime(['2024-01-01'])})
    assert data_drift(ts, ts, con=duckdb.connect()).summary['untested'] == {'t': 'type TIMESTAMP_NS (reference) / TIMESTAMP_NS (current) is neither numeric nor categorical'} \
        or 't' in data_drift(ts, ts, con=duckdb.connect()).summary['untested']

def test_inputs_relations_arrow_and_lake(tmp_path):
    ref = pd.DataFrame({'x': rng.normal(size=1500), 'k': rng.choice(list('abc'), 1500)})
    cur = pd.DataFrame({'x': rng.normal(0.3, size=1200), 'k': rng.choice(list('abc'), 1200)})
    want = data_drift(ref, cur, con=duckdb.connect()).columns
    other = duckdb.connect()   # a relation of another connection is copied over
    got = data_drift(other.from_df(ref), pa.Table.from_pandas(cur), con=duckdb.connect()).columns
    pd.testing.assert_frame_equal(got, want)
    from mlinfra_nb.lake import Lake
    repo = Lake(tmp_path/'lake', user='t').create_repository('mon')
    repo.write_table('main', 'tables/ref', pa.Table.from_pandas(ref)); repo.write_table('main', 'tables/cur', pa.Table.from_pandas(cur))
    repo.commit('main', 'data')
    got = data_drift((repo, 'main', 'tables/ref'), (repo, 'main', 'tables/cur')).columns   # default connection: the lake's
    pd.testing.assert_frame_equal(got, want)

def _drift_objects(con)->list:
    "The views and tables `data_drift` registers or creates on `con` (their names start with `_drift_`)."
    return con.execute("SELECT table_name FROM information_schema.tables WHERE table_name LIKE '\\_drift\\_%' ESCAPE '\\'").fetchall()

def test_failed_call_leaves_no_views_or_tables():
    "A call, and an error in a column's test, in the column checks or in the second input, leave the connection as it was."
    ref = pd.DataFrame({'x': rng.normal(size=200), 'k': rng.choice(list('ab'), 200)})
    cur = pd.DataFrame({'x': rng.normal(size=150), 'k': rng.choice(list('ab'), 150)})
    con, other = duckdb.connect(), duckdb.connect()
    assert data_drift(ref, cur, con=con).summary['n_tested'] == 2 and _drift_objects(con) == []
    assert data_drift(ref, cur, test='psi', con=con).columns.test.tolist() == ['psi', 'psi']   # binned: an edges table
    assert _drift_objects(con) == []
    with pytest.raises(InvalidInput, match="test 'ks' is for numeric columns; column 'k' is categorical"):
        data_drift(other.from_df(ref), cur, test={'k': 'ks'}, con=con)   # the reference is copied into a temp table first
    assert _drift_objects(con) == []
    with pytest.raises(InvalidInput, match=r"column\(s\) \['nope'\] not in the reference data"):
        data_drift(ref, cur, columns=['x', 'nope'], con=con)
    with pytest.raises(InvalidInput, match='the current data must be a DuckDB relation'): data_drift(ref, [1, 2], con=con)
    assert _drift_objects(con) == []
