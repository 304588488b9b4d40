"""The point-in-time join against a brute-force reference on randomized small data (ties, TTL edges, entities with no
history, timestamps equal to the entity time), windowed aggregations against a direct computation, and the same join on the
lakeFS backend."""
import random
import numpy as np, pandas as pd, pytest
from mlinfra_nb.workspace import InvalidInput, Workspace
from mlinfra_nb.lake import Lake
from mlinfra_nb.features import Aggregate, FeatureStore, FeatureView, parse_duration

T0 = pd.Timestamp('2026-01-01')

def random_world(seed:int, users:int=6, rows:int=60, with_created:bool=True):
    "Feature rows on a coarse time grid (so ties and exact matches are common) and entity rows around them."
    rng = random.Random(seed)
    hours = lambda: rng.randrange(0, 24 * 20, 6)          # a 6-hour grid over 20 days
    feats = []
    for i in range(rows):
        u, t = f'u{rng.randrange(users)}', T0 + pd.Timedelta(hours=hours())
        created = t + pd.Timedelta(minutes=i) if with_created else None   # distinct created times: ties are always resolvable
        feats.append({'user_id': u, 'ts': t, 'created': created, 'x': float(i), 'y': rng.choice([None, 1.5, -2.0, 7.25])})
    if not with_created:   # without a created column, rows must be unique per (user, ts)
        seen, uniq = set(), []
        for f in feats:
            if (f['user_id'], f['ts']) not in seen: seen.add((f['user_id'], f['ts'])); uniq.append(f)
        feats = uniq
    ents = []
    for _ in range(40):
        u = f'u{rng.randrange(users + 2)}'                 # some users have no history at all
        k = rng.random()
        if k < 0.3 and feats:                              # exactly at a feature row's time
            f = rng.choice(feats); u, t = f['user_id'], f['ts']
        elif k < 0.5 and feats:                            # exactly at a TTL edge of some row (and a microsecond past it)
            f = rng.choice(feats); u, t = f['user_id'], f['ts'] + pd.Timedelta(days=3) + (pd.Timedelta(microseconds=1) if rng.random() < 0.5 else pd.Timedelta(0))
        else: t = T0 + pd.Timedelta(hours=rng.randrange(-24, 24 * 25))
        ents.append({'user_id': u, 'ts': t, 'label': rng.randrange(2)})
    fdf = pd.DataFrame(feats)
    if not with_created: fdf = fdf.drop(columns='created')
    return fdf, pd.DataFrame(ents)

def brute_force(fdf:pd.DataFrame, edf:pd.DataFrame, ttl:pd.Timedelta|None, cols:list)->pd.DataFrame:
    "For each entity row: its user's rows with ts in [t - ttl, t], the latest ts, then the latest created."
    out = []
    for _, e in edf.iterrows():
        c = fdf[(fdf.user_id == e.user_id) & (fdf.ts <= e.ts)]
        if ttl is not None: c = c[c.ts >= e.ts - ttl]
        if len(c):
            c = c.sort_values(['ts', 'created'] if 'created' in c else ['ts'])
            out.append({k: c.iloc[-1][k] for k in cols})
        else: out.append({k: None for k in cols})
    return pd.DataFrame(out, columns=cols).astype('float64')

def store_with(tmp_path, fdf, **view):
    lake = Lake(tmp_path/'lake')
    repo = lake.create_repository('world')
    repo.write_table('main', 'tables/f', fdf); repo.commit('main', 'features')
    fs = FeatureStore(lake, workspace=Workspace(tmp_path/'ws', env={}))
    fs.apply(FeatureView('fv', 'lakefs://world/main/tables/f', entities=['user_id'], timestamp='ts', features=['x', 'y'], **view))
    return fs

@pytest.mark.parametrize('seed', [*range(4), *(pytest.param(s, marks=pytest.mark.slow) for s in range(4, 12))])   # `make check`: the first 4 worlds
@pytest.mark.parametrize('ttl', ['3d', None])
def test_point_in_time_matches_brute_force(tmp_path, seed, ttl):
    fdf, edf = random_world(seed)
    fs = store_with(tmp_path, fdf, created='created', ttl=ttl)
    got = fs.training_set(edf, ['fv:x', 'fv:y']).df()
    want = brute_force(fdf, edf, parse_duration(ttl) if ttl else None, ['x', 'y'])
    pd.testing.assert_frame_equal(got[['user_id', 'ts', 'label']], edf)   # entity rows kept, in order
    pd.testing.assert_frame_equal(got[['x', 'y']].astype('float64'), want)

@pytest.mark.parametrize('seed', range(4))
def test_point_in_time_without_created(tmp_path, seed):
    fdf, edf = random_world(seed, with_created=False)
    fs = store_with(tmp_path, fdf, ttl='3d')
    got = fs.training_set(edf, ['fv:x']).df()
    pd.testing.assert_frame_equal(got[['x']].astype('float64'), brute_force(fdf, edf, pd.Timedelta(days=3), ['x']))

def test_ties_without_created_are_refused(tmp_path):
    fdf = pd.DataFrame({'user_id': ['a', 'a'], 'ts': [T0, T0], 'x': [1.0, 2.0], 'y': [0.0, 0.0]})
    fs = store_with(tmp_path, fdf, ttl='3d')
    with pytest.raises(InvalidInput, match="several rows for a at 2026-01-01 00:00:00\\+00 with the same event time \\(give the view a created column"):
        fs.training_set(pd.DataFrame({'user_id': ['a'], 'ts': [T0]}), ['fv:x']).df()

@pytest.mark.parametrize('seed', range(3))
def test_windowed_aggregations_match_direct_computation(tmp_path, seed):
    fdf, edf = random_world(seed, rows=80)
    lake = Lake(tmp_path/'lake'); repo = lake.create_repository('world')
    repo.write_table('main', 'tables/f', fdf); repo.commit('main', 'features')
    fs = FeatureStore(lake, workspace=Workspace(tmp_path/'ws', env={}))
    aggs = [Aggregate('x', fn, w) for fn in ('count', 'sum', 'mean', 'min', 'max', 'stddev') for w in ('6h', '2d')]
    fs.apply(FeatureView('agg', 'lakefs://world/main/tables/f', entities=['user_id'], timestamp='ts', created='created', features=aggs))
    got = fs.training_set(edf, [f'agg:{a.name}' for a in aggs]).df()
    for i, e in edf.iterrows():
        c = fdf[(fdf.user_id == e.user_id) & (fdf.ts <= e.ts)]
        if not len(c): assert got.loc[i, [a.name for a in aggs]].isna().all(); continue
        last = c.sort_values(['ts', 'created']).iloc[-1]          # the row the join picks
        for a in aggs:
            w = fdf[(fdf.user_id == e.user_id) & (fdf.ts <= last.ts) & (fdf.ts >= last.ts - parse_duration(a.window))].x
            want = {'count': len(w), 'sum': w.sum(), 'mean': w.mean(), 'min': w.min(), 'max': w.max(), 'stddev': w.std()}[a.fn]
            v = got.loc[i, a.name]
            assert (pd.isna(v) and pd.isna(want)) or np.isclose(v, want), (i, a.name, v, want)

def test_on_the_lakefs_backend(tmp_path):
    "The same view and join through the lakeFS backend (against our lakeFS server) give the same rows as the embedded lake."
    from mlinfra_nb.lake import LakeServer, create_credentials
    from mlinfra_nb.lake.lakefs import LakeFSLake
    fdf, edf = random_world(7)
    embedded = store_with(tmp_path/'a', fdf, created='created', ttl='3d').training_set(edf, ['fv:x', 'fv:y']).df()
    served = Lake(tmp_path/'served')
    key = create_credentials(served, 'fs')
    with LakeServer(served) as srv:
        lk = LakeFSLake(srv.endpoint, key.access_key_id, key.secret_access_key, workspace=Workspace(tmp_path/'b', env={}))
        repo = lk.create_repository('world')
        repo.write_table('main', 'tables/f', fdf); repo.commit('main', 'features')
        fs = FeatureStore(lk, workspace=Workspace(tmp_path/'b', env={}))
        fs.apply(FeatureView('fv', 'lakefs://world/main/tables/f', entities=['user_id'], timestamp='ts', created='created', ttl='3d', features=['x', 'y']))
        ts = fs.training_set(edf, ['fv:x', 'fv:y'])
        pd.testing.assert_frame_equal(ts.df(), embedded)
        assert ts.lineage['views']['fv']['source_commit'] == repo.head('main').id
