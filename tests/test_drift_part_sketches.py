"""Per-window sketches kept across calls: when the current data of `data_drift` is a lake table read in place, each
Parquet part (named by the hash of its content) is sketched once per process, and the next call over a grown log
sketches only the new parts. The results equal a single pass over the same rows, on randomized logs."""
import duckdb, numpy as np, pandas as pd, pytest
from mlinfra_nb.lake import Lake
from mlinfra_nb.lake.store import generate_key
from mlinfra_nb.monitor import drift
from mlinfra_nb.monitor.drift import data_drift

def day(rng, d:int, n:int, shift:float)->pd.DataFrame:
    "`n` log rows on day `d` of March 2024: two numeric columns (one drifting by `shift` a day) and a category."
    ts = pd.Timestamp('2024-03-01', tz='UTC') + pd.to_timedelta(d * 86_400 + rng.integers(0, 86_400, n), unit='s')
    return pd.DataFrame({'amount': rng.normal(shift * d, 1.0, n), 'latency': rng.lognormal(0, 1, n),
                         'channel': rng.choice(['web', 'app'], n), 'ts': ts})

def passes(monkeypatch)->list:
    "Record the sources `sketches` is called on (each call is one pass over them)."
    seen, real = [], drift.sketches
    monkeypatch.setattr(drift, 'sketches', lambda con, source, *a, **kw: seen.append(source) or real(con, source, *a, **kw))
    return seen

@pytest.mark.parametrize('seed', range(4))
def test_a_grown_log_sketches_only_its_new_parts(tmp_path, monkeypatch, seed):
    rng = np.random.default_rng(seed)
    repo = Lake(tmp_path/'lake', user='ana').create_repository('logs')
    reference = day(rng, 0, 3000, 0.0).drop(columns='ts')
    shift, days = rng.uniform(0, 0.1), int(rng.integers(2, 5))
    for d in range(days): repo.write_table('main', 'requests', day(rng, d, int(rng.integers(500, 3000)), shift), mode='append' if d else 'overwrite')
    repo.commit('main', f'{days} days')
    drift._PART_SKETCHES.clear()
    seen = passes(monkeypatch)
    con = duckdb.connect()
    before = data_drift(reference, (repo, 'main', 'requests'), timestamp='ts', con=con)
    assert len(seen) == 2 * days and all(s.startswith('read_parquet(') for s in seen)   # two numeric columns, each part once
    repo.write_table('main', 'requests', day(rng, days, 2000, shift), mode='append'); repo.commit('main', 'one more day')
    seen.clear()
    after = data_drift(reference, (repo, 'main', 'requests'), timestamp='ts', con=con)
    assert len(seen) == 2                                                               # only the new part, per column
    whole = data_drift(reference, repo.table('main', 'requests', con=con).df(), timestamp='ts', con=con)
    pd.testing.assert_frame_equal(after.by_window, whole.by_window)
    pd.testing.assert_frame_equal(after.columns, whole.columns)
    old = before.by_window.window.unique()
    pd.testing.assert_frame_equal(after.by_window[after.by_window.window.isin(old)].reset_index(drop=True), before.by_window)

def test_an_overwritten_table_is_sketched_again(tmp_path):
    rng = np.random.default_rng(7)
    repo = Lake(tmp_path/'lake', user='ana').create_repository('logs')
    reference = day(rng, 0, 2000, 0.0).drop(columns='ts')
    repo.write_table('main', 'requests', day(rng, 0, 2000, 0.0)); repo.commit('main', 'a day')
    con = duckdb.connect()
    first = data_drift(reference, (repo, 'main', 'requests'), timestamp='ts', con=con)
    repo.write_table('main', 'requests', day(rng, 0, 2000, 0.0).assign(amount=lambda f: f.amount + 1.0))   # new rows, new part
    repo.commit('main', 'the same day, rewritten')
    second = data_drift(reference, (repo, 'main', 'requests'), timestamp='ts', con=con)
    assert 'amount' not in first.drifted and 'amount' in second.drifted
    # an older commit's parts are still the same files: its result comes back unchanged
    pd.testing.assert_frame_equal(data_drift(reference, (repo, 'main~1', 'requests'), timestamp='ts', con=con).by_window, first.by_window)

def test_an_encrypted_lake_is_sketched_in_one_pass(tmp_path, monkeypatch):
    "Encrypted parts are not files DuckDB can read: nothing is kept, and the result is the same as from the rows."
    rng = np.random.default_rng(3)
    repo = Lake(tmp_path/'lake', user='ana', key=generate_key()).create_repository('logs')
    reference = day(rng, 0, 2000, 0.0).drop(columns='ts')
    for d in range(2): repo.write_table('main', 'requests', day(rng, d, 2000, 0.3), mode='append' if d else 'overwrite')
    repo.commit('main', 'two days')
    seen = passes(monkeypatch)
    con = duckdb.connect()
    got = data_drift(reference, (repo, 'main', 'requests'), timestamp='ts', con=con)
    assert len(seen) == 2 and not any(s.startswith('read_parquet(') for s in seen)
    whole = data_drift(reference, repo.table('main', 'requests', con=con).df(), timestamp='ts', con=con)
    pd.testing.assert_frame_equal(got.by_window, whole.by_window)
    assert not drift._VIEW_PARTS                                                      # nothing left behind by the call

def test_the_kept_sketches_are_bounded(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    repo = Lake(tmp_path/'lake', user='ana').create_repository('logs')
    for d in range(3): repo.write_table('main', 'requests', day(rng, d, 500, 0.0), mode='append' if d else 'overwrite')
    repo.commit('main', 'three days')
    monkeypatch.setattr(drift, 'PART_SKETCHES_KEPT', 2)
    drift._PART_SKETCHES.clear()
    data_drift(day(rng, 0, 500, 0.0).drop(columns='ts'), (repo, 'main', 'requests'), timestamp='ts', con=duckdb.connect())
    assert len(drift._PART_SKETCHES) == 2
