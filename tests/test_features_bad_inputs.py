"""Bad input to the feature store gets a clear error and writes nothing; naive timestamps are taken as UTC; materialization
resumes where it stopped."""
import pandas as pd, pytest
from mlinfra_nb.workspace import InvalidInput, NotFound, Workspace
from mlinfra_nb.lake import Lake
from mlinfra_nb.datasets import transactions
from mlinfra_nb.features import Aggregate, Expect, FeatureStore, FeatureView

@pytest.fixture
def world(tmp_path):
    lake = Lake(tmp_path/'lake')
    repo = lake.create_repository('cards')
    tx = transactions(3_000, seed=11)
    repo.write_table('main', 'tables/tx', tx); repo.commit('main', 'transactions')
    fs = FeatureStore(lake, workspace=Workspace(tmp_path/'ws', env={}))
    view = FeatureView('spend', 'lakefs://cards/main/tables/tx', entities=['user_id'], timestamp='ts', ttl='30d',
                       features=['amount', Aggregate('amount', 'sum', '1d')], expectations=[Expect.between('amount', 0, 100_000)], policy='strict')
    fs.apply(view)
    yield fs, repo, tx, view
    lake.store.close()

def snapshot(fs, repo):
    "What a refused operation must leave as it was: the registry and source heads, staging, and the online store."
    online = fs.online.execute("SELECT count(*) FROM materializations").fetchall()[0][0]
    return fs.registry.head('main'), repo.head('main'), repo.uncommitted('main'), fs.registry.uncommitted('main'), online

@pytest.mark.parametrize('change, msg', [
    ({'features': ['amount', 'amout']}, "feature 'amout' is not a column of lakefs://cards/main/tables/tx (columns: transaction_id, ts, user_id"),
    ({'entities': ['customer']}, "entity column 'customer' is not a column"),
    ({'timestamp': 'merchant_id'}, "timestamp column 'merchant_id' is VARCHAR, not a timestamp"),
    ({'created': 'transaction_id'}, "created column 'transaction_id' is BIGINT, not a timestamp"),
    ({'features': [Aggregate('merchant_id', 'sum', '1d')]}, "cannot take the sum of 'merchant_id', which is VARCHAR"),
    ({'transforms': {'bad': 'amount +'}}, "a transform does not work"),
])
def test_bad_view_is_not_applied(world, change, msg):
    fs, repo, tx, view = world
    before = snapshot(fs, repo)
    with pytest.raises(InvalidInput) as e: fs.apply(FeatureView(**{**view.to_dict(), 'features': view.features, **change}))
    assert msg in str(e.value)
    assert snapshot(fs, repo) == before

@pytest.mark.parametrize('ttl, msg', [('90', "'90' is not a duration"), ('3 days', "'3 days' is not a duration"), ('0d', 'longer than zero'),
                                      (90, "90 is not a duration")])
def test_ttl_in_the_wrong_format(world, ttl, msg):
    fs, repo, tx, view = world
    with pytest.raises(InvalidInput, match=msg): FeatureView(**{**view.to_dict(), 'features': view.features, 'ttl': ttl})

def test_unknown_view_or_feature(world):
    fs, repo, tx, view = world
    ents = tx[['user_id', 'ts']].head(5)
    with pytest.raises(NotFound, match="no feature view 'spent' at 'main'; the views are: spend"): fs.training_set(ents, ['spent:amount'])
    with pytest.raises(InvalidInput, match="feature view 'spend' has no feature 'amount_sum_7d'; it has: amount, amount_sum_1d"):
        fs.training_set(ents, ['spend:amount_sum_7d'])
    with pytest.raises(NotFound, match="has not been materialized"): fs.online_features(['spend:amount'], {'user_id': 'u00001'})
    fs.materialize('spend')
    with pytest.raises(InvalidInput, match="has no feature 'amt'"): fs.online_features(['spend:amt'], {'user_id': 'u00001'})

def test_entity_rows_with_missing_or_mistyped_columns(world):
    fs, repo, tx, view = world
    with pytest.raises(InvalidInput, match="no column 'user_id', the key of feature view 'spend'"):
        fs.training_set(tx[['ts']].head(3), ['spend:amount'])
    with pytest.raises(InvalidInput, match="entity timestamp column 'ts' is int64, not a timestamp"):
        fs.training_set(tx[['user_id']].head(3).assign(ts=1), ['spend:amount'])
    with pytest.raises(InvalidInput, match="entity key 'user_id' is BIGINT in the entity rows but VARCHAR in lakefs://cards/main/tables/tx"):
        fs.training_set(pd.DataFrame({'user_id': [1, 2], 'ts': tx.ts.head(2).tolist()}), ['spend:amount'])

def test_naive_timestamps_are_utc(world):
    "Entity times without a zone are taken as UTC: the same instants given with a zone give the same rows."
    fs, repo, tx, view = world
    naive = tx[['user_id', 'ts']].sample(200, random_state=1).reset_index(drop=True)
    aware = naive.assign(ts=naive.ts.dt.tz_localize('UTC').dt.tz_convert('America/New_York'))   # same instants, other zone
    a, b = fs.training_set(naive, ['spend:amount']).df(), fs.training_set(aware, ['spend:amount']).df()
    pd.testing.assert_series_equal(a.amount, b.amount)

def test_duplicate_keys_at_the_same_time_are_refused(world):
    fs, repo, tx, view = world
    repo.write_table('main', 'tables/tx', tx.head(1), mode='append'); repo.commit('main', 'one row again')
    ents = tx[['user_id', 'ts']].head(3)
    with pytest.raises(InvalidInput, match=f"feature view spend: several rows for {tx.user_id.iloc[0]} at .* with the same event time"):
        fs.training_set(ents, ['spend:amount']).df()
    with pytest.raises(InvalidInput, match="cannot materialize 'spend'"): fs.materialize('spend')
    assert not fs.validate('spend').ok                                   # and validation names it
    assert '(user_id, ts) unique' in str(fs.validate('spend'))

def test_strict_ingest_writes_nothing(world):
    fs, repo, tx, view = world
    before = snapshot(fs, repo)[:4]
    with pytest.raises(InvalidInput, match="nothing written: strict expectations failed: spend at main: amount between 0 and 100000"):
        fs.ingest('spend', tx.head(10).assign(amount=-1.0, ts=tx.ts.max() + pd.Timedelta(hours=1)))
    with pytest.raises(InvalidInput, match="missing column"):   # the wrong shape is refused by the table itself, also before anything is written
        fs.ingest('spend', tx.head(10).drop(columns='category').assign(ts=tx.ts.max() + pd.Timedelta(hours=2)))
    assert snapshot(fs, repo)[:4] == before

def test_materialization_resumes_where_it_stopped(world):
    fs, repo, tx, view = world
    first = fs.materialize('spend')
    more = transactions(1_000, seed=12).assign(ts=lambda d: d.ts + (tx.ts.max() - d.ts.min()) + pd.Timedelta(hours=1))
    repo.write_table('main', 'tables/tx', more, mode='append'); repo.commit('main', 'later transactions')
    # a run that dies while writing leaves the online store as it was ...
    online_before = fs.online.execute('SELECT count(*), max(__ts) FROM online_spend').fetchall()
    wm_before = fs.online.execute("SELECT max(watermark) FROM materializations").fetchall()
    real = fs.online
    class DiesWhileWriting:
        def __getattr__(self, k): return getattr(real, k)
        def execute(self, sql, *a):
            if sql.startswith('INSERT OR REPLACE'): raise RuntimeError('disk full')
            return real.execute(sql, *a)
    fs._online = DiesWhileWriting()
    with pytest.raises(RuntimeError, match='disk full'): fs.materialize('spend')
    fs._online = real
    assert fs.online.execute('SELECT count(*), max(__ts) FROM online_spend').fetchall() == online_before
    assert fs.online.execute("SELECT max(watermark) FROM materializations").fetchall() == wm_before
    # ... and the next run picks up from the last watermark: only users with newer events are written
    second = fs.materialize('spend')
    assert not second['rebuilt'] and second['rows'] == more.user_id.nunique() and second['watermark'] > first['watermark']
    got = fs.online_features(['spend:amount'], [{'user_id': u} for u in more.user_id.unique()[:20]])
    latest = pd.concat([tx, more]).sort_values('ts').groupby('user_id').tail(1).set_index('user_id')
    assert got.amount.tolist() == latest.loc[more.user_id.unique()[:20]].amount.tolist()

def test_entity_rows_of_every_kind(world):
    "pandas, Arrow, a DuckDB relation and a lake table at a ref give the same training set."
    import pyarrow as pa
    fs, repo, tx, view = world
    ents = tx[['user_id', 'ts', 'is_fraud']].sample(300, random_state=2).reset_index(drop=True)
    repo.write_table('main', 'tables/labels', ents); repo.commit('main', 'labels')
    feats = ['spend:amount', 'spend:amount_sum_1d']
    want = fs.training_set(ents, feats).df()
    for e in (pa.Table.from_pandas(ents), fs.con.from_arrow(pa.Table.from_pandas(ents)), 'lakefs://cards/main/tables/labels'):
        pd.testing.assert_frame_equal(fs.training_set(e, feats).df(), want)
    assert fs.training_set(ents, feats).arrow().num_rows == 300

def test_warn_policy_records_and_lets_the_commit_through(world):
    fs, repo, tx, view = world
    fs.apply(FeatureView(**{**view.to_dict(), 'features': view.features, 'policy': 'warn'}))
    fs.guard('spend')
    repo.write_table('main', 'tables/tx', tx.head(5).assign(amount=-3.0, ts=tx.ts.max() + pd.Timedelta(days=1)), mode='append')
    c = repo.commit('main', 'negative amounts, recorded')
    assert repo.head('main') == c
    log = fs.validation_log('spend')
    assert not log.ok.iloc[0] and 'amount between 0 and 100000' in log.failures.iloc[0]
