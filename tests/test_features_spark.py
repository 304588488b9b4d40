"""The Spark engine against the same brute-force reference as the DuckDB engine, over the same randomized worlds, on
`local[2]` and on a standalone cluster of two workers: point-in-time joins (ties, TTL edges, no history, NULL keys), windowed
aggregations equal to DuckDB's, bad input with the same errors, lake tables read at a commit and written in one commit, and the
engine chosen by the settings."""
import numpy as np, pandas as pd, pytest
from test_features_pit import T0, brute_force, random_world, store_with
from mlinfra_nb.workspace import InvalidInput, Workspace
from mlinfra_nb.lake import Lake
from mlinfra_nb.features import Aggregate, FeatureStore, FeatureView, TrainingSet, parse_duration

def on_spark(fs, spark): return fs.use_engine(spark=spark)

@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('ttl', ['3d', None])
@pytest.mark.cluster_only(seed=1)       # every world on local[2]; one world, with and without a TTL, on the cluster
def test_point_in_time_matches_brute_force(spark, tmp_path, seed, ttl):
    fdf, edf = random_world(seed)
    fs = on_spark(store_with(tmp_path, fdf, created='created', ttl=ttl), spark)
    ts = fs.training_set(edf, ['fv:x', 'fv:y'])
    assert isinstance(ts, TrainingSet) and ts.lineage['engine'] == 'spark'
    got = ts.df()
    pd.testing.assert_frame_equal(got[['user_id', 'ts', 'label']], edf)   # entity rows kept, in order
    pd.testing.assert_frame_equal(got[['x', 'y']].astype('float64'), brute_force(fdf, edf, parse_duration(ttl) if ttl else None, ['x', 'y']))

@pytest.mark.parametrize('seed', range(2))
@pytest.mark.cluster_only(seed=0)
def test_point_in_time_without_created(spark, tmp_path, seed):
    fdf, edf = random_world(seed, with_created=False)
    fs = on_spark(store_with(tmp_path, fdf, ttl='3d'), spark)
    got = fs.training_set(edf, ['fv:x']).df()
    pd.testing.assert_frame_equal(got[['x']].astype('float64'), brute_force(fdf, edf, pd.Timedelta(days=3), ['x']))

def test_ties_without_created_are_refused(spark, tmp_path):
    fdf = pd.DataFrame({'user_id': ['a', 'a'], 'ts': [T0, T0], 'x': [1.0, 2.0], 'y': [0.0, 0.0]})
    fs = on_spark(store_with(tmp_path, fdf, ttl='3d'), spark)
    with pytest.raises(InvalidInput, match="several rows for a at 2026-01-01 00:00:00\\+00 with the same event time \\(give the view a created column"):
        fs.training_set(pd.DataFrame({'user_id': ['a'], 'ts': [T0]}), ['fv:x']).df()

def test_null_keys_and_unknown_entities_get_nulls(spark, tmp_path):
    fdf, edf = random_world(5)
    edf.loc[[0, 3], 'user_id'] = None
    fs = store_with(tmp_path, fdf, created='created', ttl='3d')
    want = fs.training_set(edf, ['fv:x', 'fv:y']).df()
    got = on_spark(fs, spark).training_set(edf, ['fv:x', 'fv:y']).df()
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert got.loc[[0, 3], ['x', 'y']].isna().all().all()

def test_windowed_aggregations_equal_duckdb(spark, tmp_path):
    fdf, edf = random_world(2, rows=80)
    lake = Lake(tmp_path/'lake'); repo = lake.create_repository('world')
    repo.write_table('main', 'tables/f', fdf); repo.commit('main', 'features')
    fs = FeatureStore(lake, workspace=Workspace(tmp_path/'ws', env={}))
    aggs = [Aggregate('x', fn, w) for fn in ('count', 'sum', 'mean', 'min', 'max', 'stddev') for w in ('6h', '2d')]
    fs.apply(FeatureView('agg', 'lakefs://world/main/tables/f', entities=['user_id'], timestamp='ts', created='created', features=aggs,
                         transforms={'x_spread_2d': 'coalesce(x_stddev_2d, 0) + x_max_2d - x_min_2d'}))
    names = [f'agg:{a.name}' for a in aggs] + ['agg:x_spread_2d']
    want = fs.training_set(edf, names).df()
    got = on_spark(fs, spark).training_set(edf, names).df()
    assert list(got.columns) == list(want.columns)
    np.testing.assert_allclose(got.iloc[:, 3:].astype('float64'), want.iloc[:, 3:].astype('float64'), rtol=1e-9, atol=1e-9)

def test_bad_input_gets_the_same_errors(spark, tmp_path):
    fdf, edf = random_world(1)
    fs = store_with(tmp_path, fdf, created='created', ttl='3d')
    cases = [(edf.drop(columns='user_id'), ['fv:x']), (edf, ['nope:x']), (edf, ['fv:nope']), (edf.assign(ts=1), ['fv:x'])]
    for ents, feats in cases:
        with pytest.raises(Exception) as duck: fs.use_engine('duckdb').training_set(ents, feats)
        with pytest.raises(type(duck.value)) as sp: fs.use_engine(spark=spark).training_set(ents, feats)
        assert str(sp.value) == str(duck.value)
    with pytest.raises(InvalidInput, match="entity key 'user_id' is bigint in the entity rows but string in lakefs://world/main/tables/f"):
        fs.use_engine(spark=spark).training_set(edf.assign(user_id=7), ['fv:x'])

def test_lake_tables_by_commit(spark, tmp_path):
    from mlinfra_nb.features.spark import read_table, write_table
    lake = Lake(tmp_path/'lake'); repo = lake.create_repository('world')
    repo.write_table('main', 'tables/t', pd.DataFrame({'k': [1, 2], 'ts': [T0, T0]}))
    first = repo.commit('main', 'v1').id
    repo.write_table('main', 'tables/t', pd.DataFrame({'k': [3], 'ts': [T0]}), mode='append'); repo.commit('main', 'v2')
    assert sorted(r.k for r in read_table(spark, repo, first, 'tables/t').collect()) == [1, 2]
    assert read_table(spark, repo, 'main', 'tables/t').count() == 3
    head = write_table(read_table(spark, repo, 'main', 'tables/t').selectExpr('k * 10 AS k10'), repo, 'main', 'tables/out', 'k times ten')
    assert repo.head('main').id == head and sorted(repo.table(head, 'tables/out').df().k10) == [10, 20, 30]
    bad = read_table(spark, repo, 'main', 'tables/t').selectExpr("CASE WHEN k = 3 THEN raise_error('mlinfra: k may not be 3') END AS k")
    with pytest.raises(InvalidInput, match='k may not be 3'): write_table(bad, repo, 'main', 'tables/bad', 'never')
    assert repo.head('main').id == head and 'tables/bad' not in repo.tables('main') and not repo.uncommitted('main')

def test_engine_chosen_by_settings(spark, tmp_path):
    fdf, edf = random_world(3)
    lake = Lake(tmp_path/'lake'); repo = lake.create_repository('world')
    repo.write_table('main', 'tables/f', fdf); repo.commit('main', 'features')
    view = FeatureView('fv', 'lakefs://world/main/tables/f', entities=['user_id'], timestamp='ts', features=['x', 'y'], created='created', ttl='3d')
    duck = FeatureStore(lake, workspace=Workspace(tmp_path/'a', env={}))
    duck.apply(view)
    configured = FeatureStore(lake, workspace=Workspace(tmp_path/'b', env={'MLINFRA_FEATURES__ENGINE': 'spark',
                                                                          'MLINFRA_SPARK__MASTER': spark.sparkContext.master}))
    got = configured.training_set(edf, ['fv:x', 'fv:y'])      # the running session serves the configured master
    assert got.lineage['engine'] == 'spark' and 'engine' not in duck.training_set(edf, ['fv:x']).lineage
    pd.testing.assert_frame_equal(got.df(), duck.training_set(edf, ['fv:x', 'fv:y']).df(), check_dtype=False)
    parts, want = got.split(valid_from='2026-01-10'), duck.training_set(edf, ['fv:x', 'fv:y']).split(valid_from='2026-01-10')
    for k in ('train', 'valid'): pd.testing.assert_frame_equal(parts[k].df(), want[k].df(), check_dtype=False)

def test_failed_jobs_name_their_root_cause(spark, tmp_path):
    """A failure on the Java side (Parquet parts deleted after the job was planned) reaches the user as its root cause, the
    missing file, not py4j's "An error occurred while calling o123.getResult"; a failed ANSI cast as PySpark's message."""
    from mlinfra_nb.workspace import MlinfraError
    from mlinfra_nb.features.spark import spark_arrow, write_table
    spark.range(8).write.parquet(str(tmp_path/'parts'))
    planned = spark.read.parquet(str(tmp_path/'parts'))
    gone = sorted((tmp_path/'parts').glob('part-*.parquet'))
    for f in gone: f.unlink()
    repo = Lake(tmp_path/'lake').create_repository('world')
    before = repo.head('main').id
    for run in (lambda: spark_arrow(planned), lambda: write_table(planned, repo, 'main', 'tables/t', 'never')):
        with pytest.raises(MlinfraError) as err: run()
        msg = str(err.value)
        assert msg.startswith('the Spark job failed: java.io.FileNotFoundException: File file:') and msg.endswith('does not exist'), msg
        assert any(f.name in msg for f in gone) and 'An error occurred while calling' not in msg
    assert repo.head('main').id == before
    bad = spark.createDataFrame(pd.DataFrame({'s': ['1', 'x']})).selectExpr('CAST(s AS INT) AS i')   # ANSI mode: the job fails
    with pytest.raises(MlinfraError, match=r'^the Spark job failed: \[CAST_INVALID_INPUT\] The value .x. of the type "STRING" cannot be cast to "INT"'):
        spark_arrow(bad)

@pytest.mark.parametrize('spark', ['cluster'], indirect=True)
def test_a_lost_worker_mid_job(spark, spark_cluster, tmp_path):
    """A worker (and its executor) killed while a job writes a lake table: Spark reruns its tasks on the other worker and the
    table is committed once, complete. A new worker then takes the lost one's place, for the tests after this one."""
    import threading, time, os
    from mlinfra_nb.features.spark import write_table
    lake = Lake(tmp_path/'lake'); repo = lake.create_repository('world')
    before = repo.head('main').id
    slow = spark.range(0, 400, numPartitions=8).selectExpr('id', "reflect('java.lang.Thread', 'sleep', CAST(40 AS BIGINT)) AS slept")
    done = {}
    job = threading.Thread(target=lambda: done.update(cid=write_table(slow, repo, 'main', 'tables/ids', 'ids')))
    job.start()
    t0 = time.time()
    while not spark.sparkContext.statusTracker().getActiveStageIds() and time.time() - t0 < 60: time.sleep(0.2)
    time.sleep(1.5)
    worker = spark_cluster.procs[2]                      # [master, worker 0, worker 1]
    assert job.is_alive()                                # the job is still running when its worker goes
    os.killpg(worker.pid, 9); worker.wait(30)
    job.join(240)
    spark_cluster.add_worker(2); spark_cluster.wait_for(2)
    assert not job.is_alive() and 'cid' in done
    assert repo.head('main').id == done['cid'] != before
    assert sorted(repo.table('main', 'tables/ids').df().id) == list(range(400))

def test_features_and_materialize_equal_duckdb(spark, tmp_path):
    "`fs.features` and `fs.materialize` on Spark: the same rows as DuckDB's, and the same online table."
    fdf, _ = random_world(4, rows=80)
    lake = Lake(tmp_path/'lake'); repo = lake.create_repository('world')
    repo.write_table('main', 'tables/f', fdf); repo.commit('main', 'features')
    view = FeatureView('agg', 'lakefs://world/main/tables/f', entities=['user_id'], timestamp='ts', created='created', ttl='3d',
                       features=['x', 'y', Aggregate('x', 'mean', '2d'), Aggregate('y', 'count', '1d')], transforms={'x2': 'x * 2'})
    duck, sp = (FeatureStore(lake, workspace=Workspace(tmp_path/n, env={})) for n in ('a', 'b'))
    duck.apply(view); on_spark(sp, spark)
    by_key = lambda df: df.sort_values(['user_id', 'ts', 'x'], ignore_index=True)
    got, want = by_key(sp.features('agg').df()), by_key(duck.features('agg').df())
    assert list(got.columns) == list(want.columns) and len(got) == len(fdf)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    a, b = duck.materialize('agg'), sp.materialize('agg')
    assert (a['rows'], a['watermark'], a['source_commit']) == (b['rows'], b['watermark'], b['source_commit'])
    table = lambda fs: fs.online.sql('SELECT * FROM online_agg ORDER BY user_id').df()
    pd.testing.assert_frame_equal(table(sp), table(duck))
    users = [{'user_id': u} for u in sorted(fdf.user_id.unique())]
    pd.testing.assert_frame_equal(sp.online_features(['agg:x', 'agg:x2', 'agg:x_mean_2d'], users), duck.online_features(['agg:x', 'agg:x2', 'agg:x_mean_2d'], users))

def test_materialize_refuses_ambiguous_ties_as_duckdb(spark, tmp_path):
    fdf = pd.DataFrame({'user_id': ['a', 'a'], 'ts': [T0, T0], 'x': [1.0, 2.0], 'y': [0.0, 0.0]})
    fs = store_with(tmp_path, fdf, ttl='3d')
    with pytest.raises(InvalidInput) as duck: fs.use_engine('duckdb').materialize('fv')
    with pytest.raises(InvalidInput) as sp: fs.use_engine(spark=spark).materialize('fv')
    assert str(sp.value) == str(duck.value) and 'several rows for a' in str(sp.value)
    with pytest.raises(Exception) as duck: fs.use_engine('duckdb').features('nope')
    with pytest.raises(type(duck.value)) as sp: fs.use_engine(spark=spark).features('nope')
    assert str(sp.value) == str(duck.value)

@pytest.mark.parametrize('spark', ['local[2]'], indirect=True)
def test_on_the_lakefs_backend(spark, tmp_path):
    """Through the lakeFS backend (against our lakeFS server on 127.0.0.1): a training set on Spark equals the embedded
    lake's, the source read at the commit asked for, not the branch's newer rows; Spark's result written back in one commit."""
    from mlinfra_nb.lake import LakeServer, create_credentials
    from mlinfra_nb.lake.lakefs import LakeFSLake
    from mlinfra_nb.features.spark import read_table, write_table
    fdf, edf = random_world(7)
    embedded = store_with(tmp_path/'a', fdf, created='created', ttl='3d').training_set(edf, ['fv:x', 'fv:y']).df()
    served = Lake(tmp_path/'served')
    key = create_credentials(served, 'fs')
    with LakeServer(served) as srv:
        lk = LakeFSLake(srv.endpoint, key.access_key_id, key.secret_access_key, workspace=Workspace(tmp_path/'b', env={}))
        repo = lk.create_repository('world')
        repo.write_table('main', 'tables/f', fdf); first = repo.commit('main', 'features').id
        repo.write_table('main', 'tables/f', fdf.assign(x=fdf.x + 1000), mode='append'); repo.commit('main', 'later rows')
        fs = on_spark(FeatureStore(lk, workspace=Workspace(tmp_path/'b', env={})), spark)
        fs.apply(FeatureView('fv', 'lakefs://world/main/tables/f', entities=['user_id'], timestamp='ts', created='created', ttl='3d', features=['x', 'y']))
        ts = fs.training_set(edf, ['fv:x', 'fv:y'], refs={'fv': first})
        pd.testing.assert_frame_equal(ts.df(), embedded, check_dtype=False)
        assert ts.lineage['views']['fv']['source_commit'] == first
        assert read_table(spark, repo, first, 'tables/f').count() == len(fdf)
        head = write_table(read_table(spark, repo, first, 'tables/f').selectExpr('x * 2 AS x2'), repo, 'main', 'tables/out', 'doubled')
        assert repo.head('main').id == head and sorted(repo.table(head, 'tables/out').df().x2) == sorted(fdf.x * 2)

def served_lakefs(tmp_path, name:str, **lake_kw):
    "A lakeFS backend over our lake server on a `Lake` at `tmp_path/name`: (server, LakeFSLake, the served lake)."
    from mlinfra_nb.lake import LakeServer, create_credentials
    from mlinfra_nb.lake.lakefs import LakeFSLake
    served = Lake(tmp_path/name, **lake_kw)
    key = create_credentials(served, 'fs')
    srv = LakeServer(served).start()
    ws = Workspace(tmp_path/f'{name}-ws', env={})
    return srv, LakeFSLake(srv.endpoint, key.access_key_id, key.secret_access_key, workspace=ws), served

def three_parts_in_two_commits(repo, fdf):
    "A table of 2 parts at the first commit, 3 at the second; the commits' ids."
    repo.write_table('main', 'tables/f', fdf.iloc[:20])
    repo.write_table('main', 'tables/f', fdf.iloc[20:40], mode='append')
    first = repo.commit('main', 'two parts').id
    repo.write_table('main', 'tables/f', fdf.iloc[40:], mode='append')
    return first, repo.commit('main', 'a third').id

def rows(df)->pd.DataFrame:
    "A Spark DataFrame's rows as pandas, in a fixed order."
    return df.toPandas().sort_values(['user_id', 'ts', 'x'], ignore_index=True)

@pytest.mark.parametrize('spark', ['local[2]'], indirect=True)
def test_lakefs_parts_are_read_in_place_by_commit(spark, tmp_path, caplog):
    """On the lakeFS backend (our lake server's local blockstore), Spark reads each commit's parts from its files:
    exactly that commit's rows, equal to the driver's reading of it, without a warning."""
    from mlinfra_nb.features.spark import arrow_frame, read_table
    fdf, _ = random_world(8)
    srv, lk, served = served_lakefs(tmp_path, 'served')
    try:
        repo = lk.create_repository('world')
        commits = three_parts_in_two_commits(repo, fdf)
        for commit, n, want in zip(commits, (2, 3), (fdf.iloc[:40], fdf)):
            got = read_table(spark, repo, commit, 'tables/f')
            files = got.inputFiles()
            assert len(files) == n and all(f.startswith(f"file://{served.store.root/'objects'}/") for f in files), files
            stored = repo.physical_addresses(commit, 'tables/f')
            assert sorted(f.removeprefix('file://') for f in files) == sorted(a.removeprefix('local://') for a in stored)
            driver = arrow_frame(spark, repo.table(commit, 'tables/f').to_arrow_table())
            assert got.dtypes == driver.dtypes
            pd.testing.assert_frame_equal(rows(got), rows(driver))
            want = want.sort_values(['user_id', 'ts', 'x'], ignore_index=True)
            pd.testing.assert_frame_equal(rows(got)[list(fdf.columns)], want, check_dtype=False)
        assert not [r for r in caplog.records if r.name.startswith('mlinfra_nb.features.spark')]
    finally: srv.stop()

def test_a_damaged_lakefs_part_is_refused(tmp_path):
    """Spark reads lakeFS's local files in place only while they hold what lakeFS recorded: a part changed on disk is
    refused by name, and the parts of a commit without it are still handed over. (No Spark session: local files only.)"""
    from pathlib import Path
    from mlinfra_nb.workspace import Corrupted
    from mlinfra_nb.features.spark import lakefs_parts
    fdf, _ = random_world(5)
    srv, lk, _ = served_lakefs(tmp_path, 'served')
    try:
        repo = lk.create_repository('world')
        first, second = three_parts_in_two_commits(repo, fdf)
        files = lakefs_parts(None, repo, second, 'tables/f')
        assert len(files) == 3 and lakefs_parts(None, repo, first, 'tables/f') == files[:2]
        damaged = bytearray(Path(files[2]).read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF                        # one flipped byte, the same size
        Path(files[2]).write_bytes(bytes(damaged))
        with pytest.raises(Corrupted, match=r"part tables/f/part-\w+\.parquet of a lakeFS table is changed or damaged"):
            lakefs_parts(None, repo, second, 'tables/f')
        assert lakefs_parts(None, repo, first, 'tables/f') == files[:2]
    finally: srv.stop()

@pytest.mark.parametrize('spark', ['local[2]'], indirect=True)
def test_an_encrypted_lake_is_read_through_the_driver(spark, tmp_path):
    """An encrypted lake's files are sealed, not Parquet: Spark gets each commit's rows from the driver, equal (types too)
    to Spark's read of the same table's files on a plain embedded lake."""
    from mlinfra_nb.lake.store import generate_key
    from mlinfra_nb.features.spark import lakefs_parts, read_table
    fdf, _ = random_world(9)
    plain = Lake(tmp_path/'plain').create_repository('world')
    plain_commits = three_parts_in_two_commits(plain, fdf)
    srv, lk, _ = served_lakefs(tmp_path, 'sealed', key=generate_key())
    try:
        repo = lk.create_repository('world')
        for commit, on_files in zip(three_parts_in_two_commits(repo, fdf), plain_commits):
            assert lakefs_parts(spark, repo, commit, 'tables/f') is None
            got, want = read_table(spark, repo, commit, 'tables/f'), read_table(spark, plain, on_files, 'tables/f')
            assert got.inputFiles() == [] and len(want.inputFiles()) > 1   # from the driver; the other from files
            assert got.dtypes == want.dtypes
            pd.testing.assert_frame_equal(rows(got), rows(want))
    finally: srv.stop()
