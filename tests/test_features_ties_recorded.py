"""The ties verdict is computed once per view version and source commit, when `ingest` stores the statistics, and a training
set at that commit, in any store, reads it instead of scanning the source again."""
import pandas as pd, pytest
import mlinfra_nb.features.training as training
from mlinfra_nb.features import FeatureStore, FeatureView
from mlinfra_nb.workspace import InvalidInput, Workspace

def rows(users, ts, created):
    return pd.DataFrame({'user_id': users, 'ts': pd.to_datetime(ts, utc=True), 'created': pd.to_datetime(created, utc=True),
                         'x': [float(i) for i in range(len(users))]})

@pytest.fixture
def fs(lake, tmp_path):
    lake.repository('demo').write_table('main', 't', rows(['a'], ['2026-01-01'], ['2026-01-01'])); lake.repository('demo').commit('main', 'start')
    fs = FeatureStore(lake, workspace=Workspace(tmp_path/'ws', env={}))
    fs.apply(FeatureView('v', 'lakefs://demo/main/t', entities=['user_id'], timestamp='ts', created='created', ttl='30d', features=['x']))
    return fs

def scans_forbidden(monkeypatch):
    def scan(*a, **k): raise AssertionError("the source was scanned for ties although the verdict is recorded")
    monkeypatch.setattr(training, 'tie_problem', scan)

def test_recorded_pass_is_read_by_a_fresh_store(fs, lake, tmp_path, monkeypatch):
    fs.ingest('v', rows(['a', 'b'], ['2026-01-02', '2026-01-02'], ['2026-01-02', '2026-01-03']))
    assert fs.statistics('v')['ties'] is None
    scans_forbidden(monkeypatch)
    fresh = FeatureStore(lake, workspace=Workspace(tmp_path/'ws', env={}))
    got = fresh.training_set(pd.DataFrame({'user_id': ['a', 'b'], 'ts': pd.to_datetime(['2026-01-05'] * 2, utc=True)}), ['v:x'], timestamp='ts').df()
    assert got.x.tolist() == [0.0, 1.0]

def test_recorded_tie_refuses_without_a_scan(fs, lake, tmp_path, monkeypatch):
    fs.ingest('v', rows(['a', 'a'], ['2026-01-02', '2026-01-02'], ['2026-01-03', '2026-01-03']))   # same user, time and created
    verdict = fs.statistics('v')['ties']
    assert verdict.startswith('feature view v: several rows for a at 2026-01-02')
    scans_forbidden(monkeypatch)
    fresh = FeatureStore(lake, workspace=Workspace(tmp_path/'ws', env={}))
    with pytest.raises(InvalidInput, match='several rows for a at 2026-01-02'):
        fresh.training_set(pd.DataFrame({'user_id': ['a'], 'ts': pd.to_datetime(['2026-01-05'], utc=True)}), ['v:x'], timestamp='ts')

def test_commit_written_outside_ingest_is_still_checked(fs, lake):
    repo = lake.repository('demo')
    repo.write_table('main', 't', rows(['a'], ['2026-01-01'], ['2026-01-01']), mode='append'); repo.commit('main', 'the same row again')
    with pytest.raises(InvalidInput, match='several rows for a at 2026-01-01'):
        fs.training_set(pd.DataFrame({'user_id': ['a'], 'ts': pd.to_datetime(['2026-01-05'], utc=True)}), ['v:x'], timestamp='ts')
