"""The gather plan of chapter 21. When a training set's features are stored columns of tables read in place, `df()` and
`arrow()` join only row positions, then take the features from the tables' Parquet parts. On random tables of many
column types, in several parts, with ties broken by created time, TTLs, NULL keys, times and values, and two views, both
must equal the whole join (`relation`): the same rows, the same pandas dtypes, the same Arrow schema. Where the plan
cannot promise that (an aggregate, a transform, an encrypted lake, parts that disagree on a column's type) it stands
aside, and the rows come from the join."""
import datetime as dt, decimal, random, threading
import pandas as pd, pyarrow as pa, pyarrow.parquet as pq, pytest
from mlinfra_nb.workspace import Workspace
from mlinfra_nb.lake import Lake
from mlinfra_nb.lake.store import generate_key
from mlinfra_nb.features import Aggregate, FeatureStore, FeatureView
import mlinfra_nb.features.training as training

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
TYPED = ['f64', 'f32', 'i64', 'i32', 'flag', 'text', 'kind', 'at', 'day', 'money']   # view 'a's features, one per type

def maybe(rng, x, p=0.15): return None if rng.random() < p else x

def typed_rows(rng, n:int, users:int, hours:int, first:int=0)->pa.Table:
    """`n` rows of view 'a': a user, a time on an hourly grid, a created time (ties on time, broken by it: the `first`-th
    microsecond on), and a value of each type."""
    ts = [T0 + dt.timedelta(hours=rng.randrange(hours)) for _ in range(n)]
    return pa.table({
        'user_id': pa.array([f'u{rng.randrange(users)}' for _ in range(n)]),
        'ts': pa.array(ts, pa.timestamp('us', 'UTC')),
        'created': pa.array([t + dt.timedelta(microseconds=first + i) for i, t in enumerate(ts)], pa.timestamp('us', 'UTC')),
        'f64': pa.array([maybe(rng, rng.choice([rng.gauss(0, 1), float('nan'), 1e300])) for _ in range(n)], pa.float64()),
        'f32': pa.array([maybe(rng, rng.random()) for _ in range(n)], pa.float32()),
        'i64': pa.array([maybe(rng, rng.randrange(-2**62, 2**62)) for _ in range(n)], pa.int64()),
        'i32': pa.array([rng.randrange(1000) for _ in range(n)], pa.int32()),        # never NULL in the table
        'flag': pa.array([maybe(rng, rng.random() < 0.5) for _ in range(n)], pa.bool_()),
        'text': pa.array([maybe(rng, rng.choice(['', 'é', 'a b', 'x' * 40])) for _ in range(n)], pa.string()),
        'kind': pa.array([maybe(rng, rng.choice(['card', 'cash'])) for _ in range(n)]).dictionary_encode(),   # pandas' category
        'at': pa.array([maybe(rng, T0 + dt.timedelta(seconds=rng.randrange(10**6))) for _ in range(n)], pa.timestamp('us', 'UTC')),
        'day': pa.array([maybe(rng, dt.date(2026, 1, 1) + dt.timedelta(days=rng.randrange(60))) for _ in range(n)], pa.date32()),
        'money': pa.array([maybe(rng, decimal.Decimal(rng.randrange(-10**6, 10**6)) / 100) for _ in range(n)], pa.decimal128(12, 2)),
    })

def plain_rows(rng, users:int, hours:int)->pa.Table:
    "View 'b's rows: at most one per user and hour (it has no created time to break a tie)."
    keys = sorted({(f'u{rng.randrange(users)}', rng.randrange(hours)) for _ in range(60)})
    return pa.table({'user_id': [u for u, _ in keys], 'ts': pa.array([T0 + dt.timedelta(hours=h) for _, h in keys], pa.timestamp('us', 'UTC')),
                     'score': [maybe(rng, rng.random()) for _ in keys], 'tag': pa.array([maybe(rng, rng.randrange(5)) for _ in keys], pa.int64())})

def entity_rows(rng, n:int, users:int, hours:int)->pd.DataFrame:
    "Entity rows with columns of their own, of several types, some on a feature row's time, some NULL."
    return pd.DataFrame({
        'user_id': [maybe(rng, f'u{rng.randrange(users + 2)}', 0.05) for _ in range(n)],
        'ts': pd.to_datetime([maybe(rng, T0 + dt.timedelta(hours=rng.randrange(-5, hours + 200), minutes=rng.choice([0, 0, 30])), 0.05)
                              for _ in range(n)], utc=True),
        'label': [rng.randrange(2) for _ in range(n)],
        'weight': [rng.random() for _ in range(n)],
        'seen': pd.array([maybe(rng, rng.randrange(9)) for _ in range(n)], dtype='Int64'),
        'note': pd.array([maybe(rng, rng.choice(['p', 'q'])) for _ in range(n)], dtype='str'),
    })

def world(tmp_path, seed:int, parts:int=3, users:int=6, hours:int=400, key=None):
    "A store whose view 'a' (typed, created, TTL 5 days) has `parts` parts and view 'b' (plain) one; and its entity rows."
    rng = random.Random(seed)
    lake = Lake(tmp_path/'lake', key=key)
    repo = lake.create_repository('world')
    for k in range(parts):
        repo.write_table('main', 'tables/a', typed_rows(rng, rng.randrange(40, 90), users, hours, 100 * k), mode='append' if k else 'overwrite')
    repo.write_table('main', 'tables/b', plain_rows(rng, users, hours))
    repo.commit('main', 'features')
    fs = FeatureStore(lake, workspace=Workspace(tmp_path/'ws', env={}))
    fs.apply(FeatureView('a', 'lakefs://world/main/tables/a', entities=['user_id'], timestamp='ts', created='created', ttl='5d',
                         features=[*TYPED, Aggregate('f64', 'sum', '1d')], transforms={'f64_twice': 'f64 * 2'}))
    fs.apply(FeatureView('b', 'lakefs://world/main/tables/b', entities=['user_id'], timestamp='ts', features=['score', 'tag']))
    return fs, entity_rows(rng, 150, users, hours)

def same_as_the_join(ts:training.TrainingSet):
    "`df()` and `arrow()` equal the join's rows and types."
    pd.testing.assert_frame_equal(ts.df(), ts.relation.df())
    got, want = ts.arrow(), ts.relation.to_arrow_table()
    assert got.schema.equals(want.schema, check_metadata=True), (got.schema, want.schema)
    assert got.num_rows == want.num_rows and all(values(got[c]) == values(want[c]) for c in want.column_names)

def values(col:pa.ChunkedArray)->list:
    "A column's values, NaN written 'NaN' (Arrow's `equals` holds NaN unequal to itself)."
    return ['NaN' if v != v else v for v in col.to_pylist()]

FEATURES = [f'a:{x}' for x in TYPED] + ['b:score', 'b:tag']

@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('parts', [3, 12])
def test_taking_gives_the_join(tmp_path, seed, parts):
    fs, edf = world(tmp_path, seed, parts=parts)
    assert len(fs.lake.repository('world').readable_parts('main', 'tables/a')) == parts
    ts = fs.training_set(edf, FEATURES)
    assert ts.gather is not None and [t[2] for t in ts.gather.takes] == [TYPED, ['score', 'tag']]
    got = ts.df()
    assert got.f64.notna().sum() > 10 and got.f64.isna().sum() > 10   # values found, and NULLs (no row, past the TTL)
    same_as_the_join(ts)

def test_full_names_a_shuffled_request_and_one_view(tmp_path):
    fs, edf = world(tmp_path, 7)
    same_as_the_join(fs.training_set(edf, ['b:tag', 'a:text', 'b:score', 'a:i64'], full_names=True))
    same_as_the_join(fs.training_set(edf[['ts', 'user_id']], ['a:money', 'a:flag']))

def test_entity_rows_as_arrow_a_relation_and_none(tmp_path):
    fs, edf = world(tmp_path, 8)
    same_as_the_join(fs.training_set(pa.Table.from_pandas(edf, preserve_index=False), FEATURES))
    same_as_the_join(fs.training_set(fs.con.from_df(edf), FEATURES))
    none = fs.training_set(edf.head(0), FEATURES)
    assert none.gather is None and len(none.df()) == 0   # no entity rows: fewer than a tenth of the feature rows, pruned
    same_as_the_join(none)

def test_few_entity_rows_are_joined(tmp_path):
    "Feature rows ten times the entity rows: the join prunes them first and reads less than whole columns; no plan takes."
    fs, edf = world(tmp_path, 10)
    ts = fs.training_set(edf.head(10), FEATURES)
    assert ts.gather is None
    assert fs.training_set(edf, FEATURES).gather is not None   # the same store, many entity rows: taken

def test_an_empty_part_and_an_empty_table(tmp_path):
    fs, edf = world(tmp_path, 11)
    repo = fs.lake.repository('world')
    repo.write_table('main', 'tables/a', typed_rows(random.Random(0), 1, 6, 400).slice(0, 0), mode='append')   # no rows
    repo.write_table('main', 'tables/a', typed_rows(random.Random(1), 30, 6, 400, 10_000), mode='append')
    repo.commit('main', 'an empty part, then rows')
    ts = fs.training_set(edf, FEATURES)
    assert ts.gather is not None and len(repo.readable_parts('main', 'tables/a')) == 5
    same_as_the_join(ts)
    repo.write_table('main', 'tables/b', plain_rows(random.Random(2), 6, 400).slice(0, 0))
    repo.commit('main', 'b emptied')
    ts = fs.training_set(edf, ['b:score', 'a:f64'])
    assert ts.gather is not None and ts.df().score.isna().all()
    same_as_the_join(ts)

def test_a_type_the_plan_cannot_take_is_joined(tmp_path):
    "A half float: DuckDB reads it from Parquet as FLOAT, but cannot take it from Arrow. The join serves it."
    fs, edf = world(tmp_path, 12)
    repo = fs.lake.repository('world')
    half = pa.table({'user_id': ['u1', 'u2'], 'ts': pa.array([T0, T0], pa.timestamp('us', 'UTC')),
                     'h': pa.array([1.5, None], pa.float16())})
    repo.write_table('main', 'tables/h', half); repo.commit('main', 'half floats')
    fs.apply(FeatureView('h', 'lakefs://world/main/tables/h', entities=['user_id'], timestamp='ts', features=['h']))
    ts = fs.training_set(edf, ['h:h'])
    assert ts.gather is None and ts.df().h.notna().sum() > 0

def test_names_that_differ_only_in_case_are_joined(tmp_path):
    "An entity column 'F64' beside the feature 'f64': DuckDB tells names apart without case, so the plan stands aside."
    fs, edf = world(tmp_path, 13)
    ts = fs.training_set(edf.assign(F64=1.0), ['a:f64', 'a:text'])
    assert ts.gather is None
    assert ts.df().shape == (len(edf), edf.shape[1] + 3)

@pytest.mark.parametrize('asked', [['a:f64_sum_1d', 'a:f64'], ['a:f64_twice'], ['b:score', 'a:f64_sum_1d']])
def test_a_computed_feature_is_joined(tmp_path, asked):
    "An aggregate or a transform is computed by the query: no plan takes, and the rows still come."
    fs, edf = world(tmp_path, 1)
    ts = fs.training_set(edf, asked)
    assert ts.gather is None and ts.df().shape == (len(edf), edf.shape[1] + len(asked))

def test_an_encrypted_lake_is_joined(tmp_path):
    fs, edf = world(tmp_path, 2, key=generate_key())
    ts = fs.training_set(edf, FEATURES)
    assert ts.gather is None
    plain_fs, _ = world(tmp_path/'plain', 2)
    pd.testing.assert_frame_equal(ts.df(), plain_fs.training_set(edf, FEATURES).df())   # the same data, the same rows

def test_parts_that_disagree_on_a_type_are_not_taken(tmp_path):
    "The lake refuses an append that changes a column's type, so a table's parts agree; the plan checks it all the same."
    more = typed_rows(random.Random(9), 20, 6, 400)
    pq.write_table(more, tmp_path/'one.parquet')
    pq.write_table(more.set_column(more.schema.get_field_index('f32'), 'f32', more['f32'].cast(pa.float64())), tmp_path/'two.parquet')
    parts = [str(tmp_path/'one.parquet'), str(tmp_path/'two.parquet')]
    assert training.part_layout(parts, ['f64']) == ([0, 20], pa.schema([pa.field('f64', pa.float64())]), 40)
    assert training.part_layout(parts, ['f64', 'f32']) is None and training.part_layout(parts, ['gone']) is None

def test_splits_read_the_join_and_agree(tmp_path):
    fs, edf = world(tmp_path, 4)
    ts = fs.training_set(edf, FEATURES)
    parts = ts.split(valid_from=T0 + dt.timedelta(hours=200))
    assert all(p.gather is None for p in parts.values())
    whole, train = ts.df(), parts['train'].df()
    pd.testing.assert_frame_equal(train, whole[whole.ts < T0 + dt.timedelta(hours=200)].reset_index(drop=True))

def test_threads_take_at_once(tmp_path):
    "Two threads take from one store at once; each gets the join's rows."
    fs, edf = world(tmp_path, 5)
    sets = [fs.training_set(edf, FEATURES), fs.training_set(edf.iloc[::-1].reset_index(drop=True), FEATURES)]
    got, errors = [None, None], []
    def work(i):
        try: got[i] = [sets[i].df() for _ in range(5)]
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors
    for s, frames in zip(sets, got):
        for f in frames: pd.testing.assert_frame_equal(f, s.relation.df())

def test_save_keeps_what_arrow_gives(tmp_path):
    fs, edf = world(tmp_path, 6)
    ts = fs.training_set(edf, FEATURES)
    fs.lake.create_repository('sets')
    ts.save('sets', 'main', 'training/one')
    saved, want = fs.lake.repository('sets').table('main', 'training/one').to_arrow_table(), ts.relation.to_arrow_table()
    assert saved.column_names == want.column_names and all(values(saved[c]) == values(want[c]) for c in want.column_names)
