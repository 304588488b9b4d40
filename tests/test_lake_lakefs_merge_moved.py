"""A settled table merge on the lakeFS backend whose destination moves meanwhile is worked out again, not committed twice.

Merging a branch whose tables changed on both sides goes through a hidden branch where the tables are settled, then merges
that branch into the destination with `allow_empty` (lakeFS would otherwise call a settled result equal to the destination
"no changes"). If another worker merged the same branch while the tables were being settled, that last merge used to land a
second merge commit of the same work (CI: two pipeline finishers, two merges into main). Now the merge sees the moved
destination, starts over, and finds nothing left to merge, as the embedded lake says for an already merged branch."""
import pandas as pd, pytest
import mlinfra_nb.lake.lakefs as lakefs_backend
from mlinfra_nb.lake.lakefs import LakeFSLake
from mlinfra_nb.workspace import InvalidInput, Workspace

def test_merge_whose_destination_moves_while_tables_settle(tmp_path, served, monkeypatch):
    srv, key = served
    def client(name): return LakeFSLake(srv.endpoint, key.access_key_id, key.secret_access_key, workspace=Workspace(tmp_path/name, env={}))
    lk, other = client('a'), client('b')
    if 'moved' in lk.repositories(): lk.delete_repository('moved')
    repo = lk.create_repository('moved')
    rows = lambda ids: pd.DataFrame({'id': ids, 'v': [f'v{i}' for i in ids]})
    repo.write_table('main', 't', rows([1, 2])); repo.commit('main', 'start')
    repo.create_branch('work', 'main')
    repo.write_table('work', 't', rows([3]), mode='append'); repo.commit('work', 'work appends 3')
    repo.write_table('main', 't', rows([4]), mode='append'); repo.commit('main', 'main appends 4')   # both sides touched t
    settle, done = lakefs_backend._make_table, []
    def settle_while_another_worker_merges(*a, **k):
        if not done:                                  # the first settling: the other worker's whole merge happens now
            done.append(None); done[0] = other.repository('moved').merge('work', into='main', message='the other worker')
        return settle(*a, **k)
    monkeypatch.setattr(lakefs_backend, '_make_table', settle_while_another_worker_merges)
    with pytest.raises(InvalidInput, match='no changes'): repo.merge('work', into='main', message='this worker')
    head = repo.head('main')
    assert head.id == done[0].id and head.message == 'the other worker'      # one merge: the other worker's
    assert repo.commit_info(head.parents[0]).message == 'main appends 4'
    assert sorted(repo.table('main', 't').df().id) == [1, 2, 3, 4]
    assert not [b for b in repo.branches() if b not in ('main', 'work')]          # the hidden settling branches are gone
