"""One conformance suite for every lake backend: the same assertions on the embedded lake called directly, on the lakeFS
backend talking to our lakeFS-API server, and on a real lakeFS whenever LAKEFS_ENDPOINT, LAKEFS_ACCESS_KEY_ID and
LAKEFS_SECRET_ACCESS_KEY point at one."""
import os, uuid
import pandas as pd, pytest
from mlinfra_nb.workspace import Conflict, InvalidInput, NotFound, PermissionDenied, Workspace
from mlinfra_nb.lake import CommonPrefix, Lake, ObjectInfo
from mlinfra_nb.lake.lakefs import LakeFSLake

REAL = all(os.environ.get(k) for k in ('LAKEFS_ENDPOINT', 'LAKEFS_ACCESS_KEY_ID', 'LAKEFS_SECRET_ACCESS_KEY'))

@pytest.fixture(params=['embedded', 'lakefs-ours', pytest.param('lakefs-real', marks=pytest.mark.skipif(not REAL, reason='no real lakeFS configured (LAKEFS_* unset)'))])
def lk(request, tmp_path):
    "A lake of each backend."
    if request.param == 'embedded':
        l = Lake(tmp_path/'lake', user='tester'); yield l; l.store.close()
    elif request.param == 'lakefs-ours':
        srv, key = request.getfixturevalue('served')
        yield LakeFSLake(srv.endpoint, key.access_key_id, key.secret_access_key, workspace=Workspace(tmp_path/'ws', env={}))
    else:
        yield LakeFSLake(workspace=Workspace(tmp_path/'ws', env=dict(os.environ)))

@pytest.fixture
def repo(lk):
    "A fresh repository (deleted afterwards), with one commit holding a.txt and dir/b.txt."
    r = lk.create_repository(f'conf-{uuid.uuid4().hex[:10]}')
    r.put('main', 'a.txt', b'a1'); r.put('main', 'dir/b.txt', b'b1')
    r.commit('main', 'seed')
    yield r
    lk.delete_repository(r.name)

def test_repositories(lk, repo):
    assert repo.name in lk.repositories()
    assert lk.repository(repo.name).default_branch == 'main'
    with pytest.raises(Conflict): lk.create_repository(repo.name)
    assert lk.create_repository(repo.name, exist_ok=True).name == repo.name
    with pytest.raises(NotFound): lk.repository('no-such-repo-here')
    with pytest.raises(InvalidInput, match='invalid repository name'): lk.create_repository('Bad_Name')

def test_branching(repo):
    head = repo.head('main')
    assert repo.create_branch('dev', 'main').id == head.id
    assert repo.branches()['dev'] == head.id
    repo.put('dev', 'c.txt', b'c')
    assert not repo.exists('main', 'c.txt') and repo.get('dev', 'c.txt') == b'c'   # a branch is isolated
    with pytest.raises(Conflict): repo.create_branch('dev', 'main')
    with pytest.raises(NotFound): repo.head('nope')
    with pytest.raises(NotFound): repo.create_branch('x', 'no-such-ref')
    with pytest.raises(InvalidInput): repo.create_branch('a b')
    repo.delete_branch('dev')
    assert 'dev' not in repo.branches()

def test_objects(repo):
    info = repo.put('main', 'data/x.csv', b'1,2\n', content_type='text/csv', metadata={'owner': 'ml'})
    assert (info.path, info.size, info.content_type, info.metadata) == ('data/x.csv', 4, 'text/csv', {'owner': 'ml'})
    s = repo.stat('main', 'data/x.csv')
    assert (s.size, s.content_type, s.metadata) == (4, 'text/csv', {'owner': 'ml'})
    assert repo.exists('main', 'data/x.csv') and not repo.exists('main', 'data/y.csv')
    with pytest.raises(NotFound): repo.get('main', 'data/y.csv')
    top = repo.list('main', delimiter='/')
    assert [o.path for o in top] == ['a.txt', 'data/', 'dir/']
    assert isinstance(top[0], ObjectInfo) and isinstance(top[1], CommonPrefix)
    assert [o.path for o in repo.list('main', after='a.txt', limit=1)] == ['data/x.csv']
    assert repo.put_many('main', {f'many/{i}': bytes([i]) for i in range(5)}) == 5
    assert [o.path for o in repo.list('main', prefix='many/')] == [f'many/{i}' for i in range(5)]
    with pytest.raises(InvalidInput): repo.put('main', '../escape', b'x')

def test_uncommitted_commit_log(repo):
    repo.put('main', 'a.txt', b'a2'); repo.put('main', 'new.txt', b'n'); repo.delete('main', 'dir/b.txt')
    assert {(c.type, c.path) for c in repo.uncommitted('main')} == {('changed', 'a.txt'), ('added', 'new.txt'), ('removed', 'dir/b.txt')}
    c = repo.commit('main', 'second', metadata={'run': '7'})
    assert (c.message, c.metadata) == ('second', {'run': '7'})
    assert repo.uncommitted('main') == []
    assert [x.message for x in repo.log('main', limit=2)] == ['second', 'seed']
    assert repo.get('main~1', 'a.txt') == b'a1' and repo.get(c.parents[0], 'dir/b.txt') == b'b1'   # history stays readable
    with pytest.raises(InvalidInput): repo.commit('main', 'nothing staged')
    assert repo.commit('main', 'empty on purpose', allow_empty=True).message == 'empty on purpose'
    with pytest.raises(InvalidInput): repo.commit('main', '')
    repo.put('main', 'z', b'z')
    with pytest.raises(Conflict, match='moved'): repo.commit('main', 'stale', expected_head=c.id)

def test_reset(repo):
    repo.put('main', 'a.txt', b'changed'); repo.put('main', 'tmp/1', b'1'); repo.put('main', 'tmp/2', b'2')
    repo.reset('main', path='a.txt')
    assert repo.get('main', 'a.txt') == b'a1'
    repo.reset('main', prefix='tmp/')
    assert repo.uncommitted('main') == []

def test_reset_of_a_folder_path_resets_nothing(repo):
    "As in lakeFS, a path ending in '/' names no object: reset accepts it and leaves the staged changes."
    repo.put('main', 'tmp/1', b'1')
    repo.reset('main', path='tmp/')
    assert [c.path for c in repo.uncommitted('main')] == ['tmp/1']

def test_diff_and_tags(repo):
    first = repo.head('main')
    repo.tag('v1', 'main')
    repo.put('main', 'a.txt', b'a2'); repo.put('main', 'c.txt', b'c'); repo.delete('main', 'dir/b.txt')
    repo.commit('main', 'change')
    changes = {(c.type, c.path) for c in repo.diff('v1', 'main')}
    assert changes == {('changed', 'a.txt'), ('added', 'c.txt'), ('removed', 'dir/b.txt')}
    assert {(c.type, c.path) for c in repo.diff('main', 'v1')} == {('changed', 'a.txt'), ('removed', 'c.txt'), ('added', 'dir/b.txt')}
    assert [(c.type, c.path) for c in repo.diff('v1', 'main', prefix='c')] == [('added', 'c.txt')]
    assert repo.tags()['v1'] == first.id and repo.get('v1', 'a.txt') == b'a1'
    with pytest.raises(Conflict): repo.tag('v1', 'main')
    repo.delete_tag('v1')
    assert 'v1' not in repo.tags()

def test_merge(repo):
    repo.create_branch('feature', 'main')
    repo.put('feature', 'f.txt', b'f'); repo.commit('feature', 'feature work')
    repo.put('main', 'm.txt', b'm'); repo.commit('main', 'main work')
    base = repo.merge_base('feature', 'main')
    assert base.message == 'seed'
    merged = repo.merge('feature', into='main', message='bring feature in', metadata={'by': 'test'})
    assert set(merged.parents) == {repo.head('feature').id, repo.log('main', limit=2)[1].id}
    assert repo.get('main', 'f.txt') == b'f' and repo.get('main', 'm.txt') == b'm'
    with pytest.raises(InvalidInput): repo.merge('feature', into='main')   # nothing new to merge

def test_merge_always_makes_a_merge_commit(repo):
    repo.create_branch('ahead', 'main')
    repo.put('ahead', 'x.txt', b'x'); c = repo.commit('ahead', 'x')
    before = repo.head('main')
    m = repo.merge('ahead', into='main')   # main has not moved, and still the merge is recorded
    assert m.parents == (before.id, c.id) and m.message == "Merge 'ahead' into 'main'"

def test_merge_into_a_dirty_branch_is_refused(repo):
    repo.create_branch('src', 'main'); repo.put('src', 's', b's'); repo.commit('src', 's')
    repo.put('main', 'wip', b'wip')
    with pytest.raises(InvalidInput): repo.merge('src', into='main')
    assert repo.uncommitted('main')[0].path == 'wip'

def test_merge_conflicts_and_strategies(repo):
    for b in ('left', 'right'): repo.create_branch(b, 'main')
    repo.put('left', 'a.txt', b'left'); repo.commit('left', 'left edit')
    repo.put('right', 'a.txt', b'right'); repo.commit('right', 'right edit')
    repo.merge('left', into='main')
    with pytest.raises(Conflict, match='a.txt|onflict'): repo.merge('right', into='main')
    assert repo.get('main', 'a.txt') == b'left'   # a refused merge changes nothing
    repo.create_branch('main2', 'main')
    repo.merge('right', into='main', strategy='source-wins')
    assert repo.get('main', 'a.txt') == b'right'
    repo.merge('right', into='main2', strategy='dest-wins')
    assert repo.get('main2', 'a.txt') == b'left'
    with pytest.raises(InvalidInput): repo.merge('right', into='main', strategy='mine')

def test_protection(repo):
    repo.create_branch('staging', 'main')
    repo.put('staging', 'p.txt', b'p'); repo.commit('staging', 'staged')
    repo.protect('main')
    assert repo.protection_rules() == ['main']
    with pytest.raises(PermissionDenied): repo.put('main', 'x.txt', b'x')
    with pytest.raises(PermissionDenied): repo.delete('main', 'a.txt')
    repo.merge('staging', into='main', message='merges are allowed into a protected branch')
    assert repo.get('main', 'p.txt') == b'p'
    repo.unprotect('main')
    repo.put('main', 'x.txt', b'x')
    with pytest.raises(NotFound): repo.unprotect('main')

def test_revert_and_hard_reset(repo):
    repo.put('main', 'a.txt', b'oops'); bad = repo.commit('main', 'bad change')
    repo.revert('main', bad.id)
    assert repo.get('main', 'a.txt') == b'a1'
    assert repo.log('main', limit=1)[0].parents[0] == bad.id
    seed = repo.log('main')[-2]
    assert seed.message == 'seed'
    assert repo.hard_reset('main', seed.id).id == seed.id
    assert repo.head('main').id == seed.id

def test_transactions(repo):
    with repo.transaction('main', 'two files together') as b:
        b.put('t/1', b'1'); b.put('t/2', b'2')
        assert not repo.exists('main', 't/1')   # invisible on main until the block succeeds
    assert repo.get('main', 't/2') == b'2'
    before, branches = repo.head('main'), set(repo.branches(show_hidden=True))
    with pytest.raises(RuntimeError):
        with repo.transaction('main', 'fails half-way') as b:
            b.put('t/3', b'3'); raise RuntimeError('boom')
    assert repo.head('main') == before and not repo.exists('main', 't/3')
    assert set(repo.branches(show_hidden=True)) == branches   # the ephemeral branch is gone, not just hidden

def test_tables(lk, repo):
    df = pd.DataFrame({'user': ['a', 'b', 'c'], 'amount': [1.5, 2.0, 3.5]})
    info = repo.write_table('main', 'tables/tx', df)
    assert info.rows == 3 and [f.name for f in info.schema] == ['user', 'amount']
    repo.commit('main', 'table v1')
    repo.write_table('main', 'tables/tx', pd.DataFrame({'user': ['d'], 'amount': [10.0]}), mode='append')
    repo.commit('main', 'table v2')
    assert repo.table_info('main', 'tables/tx').rows == 4
    q = "SELECT count(*), sum(amount) FROM 'lakefs://{}/{}/tables/tx'"
    assert lk.sql(q.format(repo.name, 'main')).fetchall() == [(4, 17.0)]
    assert lk.sql(q.format(repo.name, 'main~1')).fetchall() == [(3, 7.0)]   # any version, by ref
    assert sorted(repo.table('main', 'tables/tx').df().user) == ['a', 'b', 'c', 'd']
    d = repo.table_diff('main~1', 'main', 'tables/tx', key='user')
    assert d.counts == {'added': 1, 'removed': 0, 'changed': 0}
    with pytest.raises(InvalidInput, match='cannot append'):
        repo.write_table('main', 'tables/tx', pd.DataFrame({'user': ['e']}), mode='append')
    with pytest.raises(NotFound): repo.table_info('main', 'tables/none')
    assert repo.tables('main') == ['tables/tx']

def ids(*ranges)->pd.DataFrame: return pd.DataFrame({'id': [i for r in ranges for i in r]})

def ids_at(repo, ref, path='tables/t')->list: return sorted(repo.table(ref, path).df().id)

def test_table_appends_on_two_branches_merge_into_their_union(repo):
    repo.write_table('main', 'tables/t', ids(range(5))); repo.commit('main', 'start')
    for b, rows in (('a', range(5, 8)), ('b', range(8, 10))):
        repo.create_branch(b, 'main'); repo.write_table(b, 'tables/t', ids(rows), mode='append'); repo.commit(b, f'{b} appends')
    repo.merge('a', into='main'); repo.merge('b', into='main')
    info = repo.table_info('main', 'tables/t')
    assert ids_at(repo, 'main') == list(range(10)) and info.rows == 10 and len(info.parts) == 3

def test_table_overwrites_and_deletes_conflict_by_table(repo):
    repo.write_table('main', 'tables/t', ids(range(5))); repo.commit('main', 'start')
    for b in ('x', 'y', 'z', 'w'): repo.create_branch(b, 'main')
    repo.write_table('x', 'tables/t', ids([100])); repo.commit('x', 'x overwrites')
    repo.write_table('y', 'tables/t', ids([200, 201])); repo.commit('y', 'y overwrites')
    repo.write_table('z', 'tables/t', pd.DataFrame({'id': [300], 'note': ['wider']})); repo.commit('z', 'z changes the schema')
    repo.delete_table('w', 'tables/t'); repo.commit('w', 'w deletes')
    repo.merge('x', into='main')
    before = repo.head('main')
    for b, how in (('y', 'overwritten'), ('z', 'schema changed'), ('w', 'deleted')):
        with pytest.raises(Conflict, match=f"table 'tables/t' \\({how} on '{b}', overwritten on 'main'\\)"): repo.merge(b, into='main')
    assert repo.head('main') == before and ids_at(repo, 'main') == [100]   # refused merges change nothing
    repo.merge('y', into='main', strategy='dest-wins')
    assert ids_at(repo, 'main') == [100]
    repo.merge('z', into='main', strategy='source-wins')
    assert repo.table('main', 'tables/t').df().to_dict('records') == [{'id': 300, 'note': 'wider'}]
    assert repo.table_info('main', 'tables/t').rows == 1
    repo.merge('w', into='main', strategy='source-wins')
    assert 'tables/t' not in repo.tables('main') and not repo.list('main', prefix='tables/t/')

def test_table_transactions_that_overlap(repo):
    repo.write_table('main', 'tables/t', ids(range(3))); repo.commit('main', 'start')
    with repo.transaction('main', 'outer append') as outer:
        outer.write_table('tables/t', ids([3]), mode='append')
        with repo.transaction('main', 'inner append') as inner: inner.write_table('tables/t', ids([4]), mode='append')
    assert ids_at(repo, 'main') == [0, 1, 2, 3, 4] and repo.table_info('main', 'tables/t').rows == 5
    with pytest.raises(Conflict, match="table 'tables/t'"):
        with repo.transaction('main', 'outer overwrite') as outer:
            outer.write_table('tables/t', ids([7]))
            with repo.transaction('main', 'inner append') as inner: inner.write_table('tables/t', ids([8]), mode='append')
    assert ids_at(repo, 'main') == [0, 1, 2, 3, 4, 8]
    assert not [b for b in repo.branches() if b.startswith('tx-')]
