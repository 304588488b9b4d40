"""Two-stage drift (`features.sketch` bounds + `monitor.drift` exact fallback): the bounds hold on randomized distributions
(heavy tails, ties, constant columns, NaN and infinities, values outside the reference's range, tiny and empty samples),
verdicts always equal the exact path's, and the exact fallback triggers whenever the threshold lies within a score's bounds."""
import duckdb, numpy as np, pandas as pd, pytest
from scipy import stats
from mlinfra_nb.workspace import InvalidInput
from mlinfra_nb.features.sketch import Sketch, bounds, merge, reference_sketches, sketches
from mlinfra_nb.monitor.drift import data_drift

def sample(rng, kind:str, n:int, shift:float=0.0)->np.ndarray:
    "n values of a distribution named `kind`, moved by `shift` (in units of its spread)."
    if kind == 'normal': v = rng.normal(shift, 1.0, n)
    elif kind == 'cauchy': v = rng.standard_cauchy(n) + shift
    elif kind == 't2': v = rng.standard_t(2, n) + shift
    elif kind == 'lognormal': v = rng.lognormal(shift, 2.0, n)
    elif kind == 'ties': v = np.round(rng.normal(shift, 1.0, n), 1)
    elif kind == 'integers': v = rng.poisson(5 + 3 * abs(shift), n).astype(float)
    elif kind == 'constant': v = np.full(n, 3.25 + shift)
    elif kind == 'bimodal': v = np.where(rng.random(n) < 0.5, rng.normal(-5, 0.1, n), rng.normal(5 + shift, 0.1, n))
    elif kind == 'huge': v = rng.normal(0, 1, n) * 1e150 + shift * 1e150
    elif kind == 'offset': v = 1e9 + rng.normal(shift, 1e-3, n)
    else: raise ValueError(kind)
    return v

KINDS = ['normal', 'cauchy', 't2', 'lognormal', 'ties', 'integers', 'constant', 'bimodal', 'huge', 'offset']

def dirty(rng, v:np.ndarray)->np.ndarray:
    "Sprinkle NaN and infinities (which drift leaves out)."
    v = v.copy(); k = rng.random(len(v))
    v[k < 0.03] = np.nan; v[(k >= 0.03) & (k < 0.04)] = np.inf; v[(k >= 0.04) & (k < 0.05)] = -np.inf
    return v

def sketch_pair(r, c, bins):
    con = duckdb.connect(); con.register('r', pd.DataFrame({'x': r})); con.register('c', pd.DataFrame({'x': c}))
    rs = reference_sketches(con, 'r', {'x': 'x'}, bins)['x']
    return rs, sketches(con, 'c', 'x', rs.grid).get(None)

def within(v, lo, hi, rel=1e-12): return lo - rel * max(abs(lo), abs(hi), 1e-300) <= v <= hi + rel * max(abs(lo), abs(hi), 1e-300)

@pytest.mark.parametrize('seed', range(60))
def test_bounds_hold_on_random_distributions(seed):
    rng = np.random.default_rng(seed)
    kr, kc = rng.choice(KINDS), rng.choice(KINDS) if rng.random() < 0.3 else None
    nr, nc = int(rng.choice([1, 2, 7, 300, 5000])), int(rng.choice([1, 3, 50, 4000]))
    r = sample(rng, kr, nr)
    c = sample(rng, kc or kr, nc, float(rng.choice([0.0, 0.05, 0.5, 3.0])))
    if rng.random() < 0.5: r, c = dirty(rng, r), dirty(rng, c)
    fr, fc = r[np.isfinite(r)], c[np.isfinite(c)]
    bins = int(rng.choice([1, 16, 1024, 8192]))
    rs, cs = sketch_pair(r, c, bins)
    assert rs.n == len(fr) and (cs.n if cs else 0) == len(fc)
    if not len(fr) or not len(fc): return   # an empty side: drift reports it untested (below)
    b = bounds(rs, cs)
    W, D = stats.wasserstein_distance(fr, fc), stats.ks_2samp(fr, fc).statistic
    assert within(W, *b.wasserstein), (kr, kc, b.wasserstein, W)
    assert within(D, *b.ks), (kr, kc, b.ks, D)
    distinct = len(np.unique(np.r_[fr, fc]))
    assert b.n_values <= distinct and (not b.values_exact or b.n_values == distinct)
    margin = 4 * (np.spacing(abs(np.mean(fr))) / np.std(fr)) ** 2 if np.std(fr) > 0 else 0   # two variance algorithms on the same doubles
    assert rs.std == pytest.approx(np.std(fr), rel=1e-9 + margin, abs=1e-300)

def test_merge_equals_one_sketch_of_everything():
    rng = np.random.default_rng(3)
    con = duckdb.connect()
    con.register('t', pd.DataFrame({'x': dirty(rng, rng.standard_t(2, 6000)), 'g': rng.integers(0, 7, 6000)}))
    g = reference_sketches(con, 't', {'x': 'x'}, 512)['x'].grid
    whole, parts = sketches(con, 't', 'x', g)[None], sketches(con, 't', 'x', g, by='g', center=0.0)
    m = merge(*parts.values())
    for k in ('index', 'count', 'vmin', 'vmax'): assert getattr(m, k).tolist() == getattr(whole, k).tolist()
    x = con.sql('SELECT x FROM t WHERE isfinite(x)').df().x
    assert m.mean == pytest.approx(x.mean(), rel=1e-9) and m.std == pytest.approx(np.std(x), rel=1e-9)

def frames(rng, n_ref=3000, n_cur=2000, near:dict|None=None, with_dirt:bool=False):
    "A reference and a current frame over KINDS (some shifted; NaN and infinities sprinkled `with_dirt`), plus columns"
    " `near` = {name: factor} whose current is the reference moved by factor x 0.1 x its std (normed Wasserstein = factor x 0.1)."
    ref = pd.DataFrame({k: sample(rng, k, n_ref) for k in KINDS})
    cur = pd.DataFrame({k: sample(rng, k, n_cur, float(rng.choice([0.0, 0.02, 0.3]))) for k in KINDS}).reindex(range(n_ref))
    if with_dirt: ref, cur = ref.apply(lambda s: dirty(rng, s.to_numpy())), cur.apply(lambda s: dirty(rng, s.to_numpy()))
    for name, f in (near or {}).items():
        base = rng.normal(0, 1, n_ref)
        if with_dirt: base = dirty(rng, base)
        ref[name], cur[name] = base, base + f * 0.1 * np.std(base[np.isfinite(base)])   # NaN and infinities stay in place
    return ref, cur

def compare(res, exact):
    a, e = res.columns.set_index('column'), exact.columns.set_index('column')
    # a score equal to its threshold up to the last bits is a tie that the exact path itself does not reproduce run to run
    # (DuckDB's parallel sums); such a column must have been recomputed exactly, and its verdict is that computation's
    tie = (e.score - e.threshold).abs() <= 1e-12 * e.threshold.abs()
    assert (a.stage[tie] == 'recomputed').all(), a[tie]
    assert a.drifted[~tie].tolist() == e.drifted[~tie].tolist(), a.compare(e)
    assert a.test.tolist() == e.test.tolist()
    t = a[a.test.notna()]
    for col, row in t.iterrows():
        assert within(e.score[col], row.score_low, row.score_high, rel=1e-9), (col, row.score_low, e.score[col], row.score_high)
        if row.stage in ('exact', 'recomputed'): assert row.score == pytest.approx(e.score[col], rel=1e-12, abs=1e-15)
        # the fallback triggers whenever the threshold lies within the score's bounds
        if row.stage == 'sketch': assert not (row.score_low <= row.threshold <= row.score_high), (col, row)
    return a

@pytest.mark.parametrize('seed', range(8))
def test_verdicts_equal_exact_and_fallback_triggers(seed):
    rng = np.random.default_rng(100 + seed)
    ref, cur = frames(rng, near={'at': 1.0, 'just_below': 1 - 1e-4, 'just_above': 1 + 1e-4, 'far': 3.0}, with_dirt=bool(seed % 2))
    res, exact = data_drift(ref, cur, con=duckdb.connect()), data_drift(ref, cur, con=duckdb.connect(), exact=True)
    a = compare(res, exact)
    assert set(res.summary['recomputed_exactly']) >= {'at', 'just_below', 'just_above'}
    assert a.stage['far'] == 'sketch' and a.stage['normal'] == 'sketch'

@pytest.mark.parametrize('seed', range(4))
def test_ks_p_value_bounds_and_verdicts(seed):
    rng = np.random.default_rng(200 + seed)
    ref, cur = frames(rng, n_ref=800, n_cur=600)
    res, exact = data_drift(ref, cur, test='ks', con=duckdb.connect()), data_drift(ref, cur, test='ks', con=duckdb.connect(), exact=True)
    compare(res, exact)
    # thresholds placed inside each column's p-value bounds: every tested column is recomputed, verdicts still exact
    a = res.columns.set_index('column')
    thr = {c: (a.score_low[c] + a.score_high[c]) / 2 for c in a.index if a.test[c] == 'ks' and a.score_high[c] > a.score_low[c]}
    res2, exact2 = (data_drift(ref, cur, test='ks', threshold=thr, con=duckdb.connect(), exact=e) for e in (False, True))
    b = compare(res2, exact2)
    assert all(b.stage[c] == 'recomputed' for c in thr), b.stage

def test_windows_with_empty_and_all_nan_windows():
    rng = np.random.default_rng(5)
    ref = pd.DataFrame({'x': rng.normal(size=4000), 'y': rng.standard_t(2, 4000)})
    days = pd.to_datetime('2024-01-01') + pd.to_timedelta(np.repeat([0, 1, 3, 4], 500), unit='D')
    cur = pd.DataFrame({'x': np.r_[rng.normal(size=1000), rng.normal(0.107, size=500), np.full(500, np.nan)],
                        'y': rng.standard_t(2, 2000), 'ts': days})
    res = data_drift(ref, cur, timestamp='ts', con=duckdb.connect())
    exact = data_drift(ref, cur, timestamp='ts', con=duckdb.connect(), exact=True)
    assert res.windows.note.tolist() == exact.windows.note.tolist() == ['', '', 'no data', '', '']
    assert res.by_window.drifted.tolist() == exact.by_window.drifted.tolist()
    assert res.by_window.test.tolist() == exact.by_window.test.tolist()
    last = res.by_window[res.by_window.window == '2024-01-05'].set_index('column')
    assert last.test.isna()['x'] and last.note['x'].startswith('no values in the current data in this window')
    compare(res, exact)

def test_reference_sketches_from_the_feature_store_are_used(tmp_path):
    from mlinfra_nb.lake import Lake
    from mlinfra_nb.workspace import Workspace
    from mlinfra_nb.features.views import FeatureStore, FeatureView
    from mlinfra_nb.datasets import transactions
    lake = Lake(tmp_path/'lake'); repo = lake.create_repository('cards')
    tx = transactions(4000, seed=3)
    repo.write_table('main', 'tables/tx', tx); repo.commit('main', 'rows')
    fs = FeatureStore(lake, workspace=Workspace(tmp_path/'ws', env={}))
    fs.apply(FeatureView('spend', 'lakefs://cards/main/tables/tx', entities=['user_id'], timestamp='ts', created=None, ttl='30d', features=['amount', 'category']))
    sk = fs.sketches('spend')
    cur = tx[['amount', 'category']].assign(amount=tx.amount * 1.3)
    ref = tx[['amount', 'category']]
    with_sk = data_drift(ref, cur, reference_sketches=sk, con=duckdb.connect())
    plain, exact = data_drift(ref, cur, con=duckdb.connect()), data_drift(ref, cur, con=duckdb.connect(), exact=True)
    compare(with_sk, exact)
    assert with_sk.columns.score_low.tolist() == pytest.approx(plain.columns.score_low.tolist(), rel=1e-9)
    # the reference's amount column is not read when its sketch is given: nulls there change nothing
    blind = data_drift(ref.assign(amount=np.nan), cur, reference_sketches=sk, con=duckdb.connect()).columns.set_index('column')
    assert blind.n_reference['amount'] == len(tx) and blind.stage['amount'] == 'sketch'
    with pytest.raises(InvalidInput, match='reference_sketches is a dict'): data_drift(ref, cur, reference_sketches={'amount': {}})

def test_exact_true_gives_exact_scores_everywhere():
    rng = np.random.default_rng(9)
    ref, cur = frames(rng, n_ref=2000, n_cur=1500)
    e = data_drift(ref, cur, exact=True, con=duckdb.connect()).columns
    assert set(e.stage.dropna()) == {'exact'} and (e.score_low.dropna() == e.score_high.dropna()).all()
    for col in ('normal', 'cauchy', 'lognormal'):
        r, c = ref[col].to_numpy(), cur[col].dropna().to_numpy()
        assert e.set_index('column').score[col] == pytest.approx(stats.wasserstein_distance(r, c) / np.std(r), rel=1e-9)
