"""Edge cases found in review: late and corrected rows online, splits outliving their parent, threads, NULLs and infinities,
policies changed after guarding, statistics per definition version, and name clashes online."""
import datetime as dt, gc, threading
import numpy as np, pandas as pd, pytest
from mlinfra_nb.workspace import InvalidInput, PreconditionFailed, Workspace
from mlinfra_nb.lake import Lake
from mlinfra_nb.features import Expect, FeatureStore, FeatureView
from mlinfra_nb.features.validation import check

T0 = pd.Timestamp('2026-01-01')

@pytest.fixture
def store(tmp_path):
    lake = Lake(tmp_path/'lake')
    repo = lake.create_repository('world')
    fdf = pd.DataFrame({'k': ['a', 'b'], 'ts': [T0, T0 + pd.Timedelta(hours=5)], 'created': [T0, T0 + pd.Timedelta(hours=5)], 'x': [1.0, 5.0]})
    repo.write_table('main', 'tables/f', fdf); repo.commit('main', 'f')
    fs = FeatureStore(lake, workspace=Workspace(tmp_path/'ws', env={}))
    fs.apply(FeatureView('fv', 'lakefs://world/main/tables/f', entities=['k'], timestamp='ts', created='created', features=['x']))
    yield fs, repo
    lake.store.close()

def online_equals_offline(fs, keys):
    at = fs.online.execute("SELECT max(watermark) FROM materializations").fetchall()[0][0]
    on = fs.online_features(['fv:x'], [{'k': k} for k in keys]).x.tolist()
    off = fs.training_set(pd.DataFrame({'k': keys, 'ts': [pd.Timestamp(at)] * len(keys)}), ['fv:x']).df().x.tolist()
    assert on == off, (on, off)
    return on

def test_late_rows_and_corrections_reach_the_online_store(store):
    fs, repo = store
    fs.materialize('fv')
    late = pd.DataFrame({'k': ['a', 'a'], 'ts': [T0, T0 + pd.Timedelta(hours=1)], 'created': [T0 + pd.Timedelta(minutes=5), T0 + pd.Timedelta(hours=1)],
                         'x': [2.0, 3.0]})   # a correction of a's row, and a row older than the newest event materialized
    repo.write_table('main', 'tables/f', late, mode='append'); repo.commit('main', 'late rows')
    r = fs.materialize('fv')
    assert r['rows'] == 1 and not r['rebuilt']
    assert online_equals_offline(fs, ['a', 'b']) == [3.0, 5.0]
    repo.write_table('main', 'tables/f', pd.DataFrame({'k': ['b'], 'ts': [T0], 'created': [T0], 'x': [1.7]}))   # overwrite: a is gone, b changed
    repo.commit('main', 'overwrite')
    fs.materialize('fv')
    assert fs.online_features(['fv:x'], [{'k': 'a'}, {'k': 'b'}]).x.tolist()[1] == 1.7
    assert pd.isna(fs.online_features(['fv:x'], {'k': 'a'}).x.iloc[0])

def test_null_keys_are_not_served_and_do_not_block(store):
    fs, repo = store
    repo.write_table('main', 'tables/f', pd.DataFrame({'k': pd.Series([None], dtype='str'), 'ts': [T0], 'created': [T0], 'x': [9.0]}), mode='append'); repo.commit('main', 'null key')
    assert fs.materialize('fv')['rows'] == 2
    got = fs.online_features(['fv:x'], [{'k': 'a'}, {'k': None}])
    assert got.x.iloc[0] == 1.0 and pd.isna(got.x.iloc[1])

def test_online_lookup_edges(store):
    fs, repo = store
    fs.materialize('fv')
    assert len(fs.online_features(['fv:x'], pd.DataFrame({'k': pd.Series([], dtype=str)}))) == 0
    with pytest.raises(InvalidInput, match=r"column names \['x'\] would appear twice"): fs.online_features(['fv:x'], [{'k': 'a', 'x': 1}])
    assert fs.online_features(['fv:x'], [{'k': 'a', 'x': 1}], full_names=True).fv__x.iloc[0] == 1.0

def test_splits_outlive_their_training_set(store):
    fs, repo = store
    parts = fs.training_set(pd.DataFrame({'k': ['a', 'b'], 'ts': [T0 + pd.Timedelta(days=1), T0 + pd.Timedelta(days=3)]}), ['fv:x']).split(valid_from=T0 + pd.Timedelta(days=2))
    gc.collect()
    assert parts['train'].df().x.tolist() == [1.0] and parts['valid'].df().x.tolist() == [5.0]

def test_threads_share_a_store(store):
    fs, repo = store
    fs.materialize('fv')
    errors = []
    def work(i):
        try:
            for _ in range(5):
                if i % 3 == 0: assert fs.training_set(pd.DataFrame({'k': ['a'], 'ts': [T0 + pd.Timedelta(days=1)]}), ['fv:x']).df().x.iloc[0] == 1.0
                elif i % 3 == 1: assert fs.validate('fv').ok
                else: assert fs.online_features(['fv:x'], {'k': 'b'}).x.iloc[0] == 5.0
        except Exception as e: errors.append(repr(e))
    ts = [threading.Thread(target=work, args=(i,)) for i in range(9)]
    for t in ts: t.start()
    for t in ts: t.join(60)
    assert not errors, errors

def test_one_of_with_none_and_typed_between(store):
    fs, repo = store
    con = fs.con
    con.register('t', pd.DataFrame({'k': ['a', 'b', None], 'ts': [T0, T0 + pd.Timedelta(days=10), T0], 'cat': ['food', 'zzz', None], 'x': [1.0, np.inf, 2.0]}))
    v = FeatureView('t', 'lakefs://world/main/t', entities=['cat'], timestamp='ts', features=['x'],
                    expectations=[Expect.one_of('cat', ['food', None]), Expect.between('ts', dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 5)),
                                  Expect.between('x', 0, float('inf')), Expect.one_of('k', [np.str_('a'), 'b'])])
    fails = {f.expectation: f.rows for f in check(con, 't', v)}
    assert fails["cat one of ['food', None]"] == 1 and fails['ts between 2026-01-01T00:00:00 and 2026-01-05T00:00:00'] == 1
    assert "k one of ['a', 'b']" in fails and not any(e.startswith('x between') for e in fails)

def test_guard_follows_the_current_policy(store):
    fs, repo = store
    v = fs.view('fv')
    fs.apply(FeatureView(**{**v.to_dict(), 'features': v.features, 'expectations': [Expect.between('x', 0, 10)], 'policy': 'strict'}))
    fs.guard('fv')
    bad = pd.DataFrame({'k': ['c'], 'ts': [T0], 'created': [T0], 'x': [99.0]})
    repo.write_table('main', 'tables/f', bad, mode='append')
    with pytest.raises(PreconditionFailed): repo.commit('main', 'refused while strict')
    fs.apply(FeatureView(**{**v.to_dict(), 'features': v.features, 'expectations': [Expect.between('x', 0, 10)], 'policy': 'warn'}))
    repo.commit('main', 'let through once the policy is warn')
    assert not fs.validation_log('fv').ok.iloc[0]

def test_statistics_follow_the_definition_and_survive_infinities(store):
    fs, repo = store
    assert list(fs.statistics('fv')['features']) == ['x']
    v = fs.view('fv')
    fs.apply(FeatureView(**{**v.to_dict(), 'features': v.features, 'transforms': {'x2': 'x * 2'}}))
    assert list(fs.statistics('fv')['features']) == ['x', 'x2']
    fs.ingest('fv', pd.DataFrame({'k': ['d'], 'ts': [T0], 'created': [T0], 'x': [np.inf]}))
    s = fs.statistics('fv')['features']['x']
    assert s['infinite'] == 1 and s['max'] == 5.0 and sum(b['count'] for b in s['histogram']) == 2

def test_features_relation_is_pinned_to_a_commit(store):
    fs, repo = store
    rel = fs.features('fv')
    repo.write_table('main', 'tables/f', pd.DataFrame({'k': ['z'], 'ts': [T0], 'created': [T0], 'x': [0.0]}), mode='append'); repo.commit('main', 'more')
    fs.validate('fv')
    assert len(rel.df()) == 2 and len(fs.features('fv').df()) == 3
