"""Where lakeFS clients depend on the details: checksums and ETags, sample data, hidden branches, cherry-pick and the error
texts and statuses clients match on -- through the official `lakefs` SDK, lakefs-spec and plain HTTP, against our server."""
import hashlib, duckdb, lakefs, pytest, requests
from mlinfra_nb.lake import Lake
from mlinfra_nb.lake import store as lake_store
from mlinfra_nb.lake.server import LakeServer, create_credentials

def md5(b:bytes)->str: return hashlib.md5(b).hexdigest()

@pytest.fixture
def served(tmp_path):
    lake = Lake(tmp_path/'lake', user='server')
    key = create_credentials(lake, 'alice')
    with LakeServer(lake) as srv:
        yield lake, srv, lakefs.Client(host=srv.endpoint, username=key.access_key_id, password=key.secret_access_key), (key.access_key_id, key.secret_access_key)
    lake.store.close()

# --- MD5 checksums and ETags -------------------------------------------------------------------------------------------

def test_checksum_and_etag_are_the_md5(served):
    lake, srv, client, auth = served
    repo = lakefs.Repository('sums', client=client).create(storage_namespace='local://sums')
    body = b'ship,tonnage\nVasa,1210\n'
    main = repo.branch('main')
    main.object('fleet/ships.csv').upload(body)
    assert main.object('fleet/ships.csv').stat().checksum == md5(body)
    assert [o.checksum for o in main.objects(prefix='fleet/')] == [md5(body)]
    url = f'{srv.endpoint}/api/v1/repositories/sums/refs/main/objects'
    for method in (requests.get, requests.head):
        assert method(url, params={'path': 'fleet/ships.csv'}, auth=auth).headers['ETag'] == f'"{md5(body)}"'
    assert requests.get(url, params={'path': 'fleet/ships.csv'}, headers={'If-None-Match': f'"{md5(body)}"'}, auth=auth).status_code == 304
    info = lake.repository('sums').stat('main', 'fleet/ships.csv')
    assert (info.md5, info.address) == (md5(body), hashlib.sha256(body).hexdigest())   # content addressing stays on SHA-256

def test_md5_of_table_parts_and_copies(served):
    lake, srv, client, auth = served
    import pandas as pd
    repo = lake.create_repository('parts')
    repo.write_table('main', 'crew', pd.DataFrame({'name': ['Ada', 'Grace'], 'rank': [1, 2]}))
    parts = [o for o in repo.list('main', prefix='crew/') if o.path.endswith('.parquet')]
    assert parts and all(o.md5 == md5(repo.get('main', o.path)) for o in parts)
    main = lakefs.Repository('parts', client=client).branch('main')
    main.object('notes.txt').upload(b'copied text')
    main.object('notes.txt').copy('main', 'notes-copy.txt')
    assert main.object('notes-copy.txt').stat().checksum == md5(b'copied text')

def _make_old_format(root):
    "Rewrite the lake's `blobs` table to the layout older versions wrote: no md5 column."
    con = duckdb.connect(str(root/'catalog.duckdb'))
    con.execute('CREATE TABLE blobs_old AS SELECT address, file, "offset", size FROM blobs')
    con.execute('DROP TABLE blobs'); con.execute('ALTER TABLE blobs_old RENAME TO blobs')
    assert 'md5' not in {r[0] for r in con.execute('DESCRIBE blobs').fetchall()}
    con.close()

@pytest.mark.parametrize('encrypted', [False, True])
def test_old_lake_opens_and_gains_md5(tmp_path, encrypted):
    key = lake_store.generate_key() if encrypted else None
    lake = Lake(tmp_path/'old', user='me', key=key)
    repo = lake.create_repository('archive')
    many = {f'logs/{i:03}.txt': f'entry {i}\n'.encode() for i in range(40)}   # packed together
    repo.put_many('main', many)
    repo.put('main', 'big.bin', b'\x00\x01' * 200_000)                        # its own file
    first = repo.commit('main', 'before the upgrade').id
    repo.put('main', 'staged.txt', b'not committed yet')
    lake.store.close()
    _make_old_format(tmp_path/'old')
    again = Lake(tmp_path/'old', user='me', key=key).repository('archive')
    for p, body in [*many.items(), ('big.bin', b'\x00\x01' * 200_000), ('staged.txt', b'not committed yet')]:
        info = again.stat('main', p)
        assert (info.md5, info.address, again.get('main', p)) == (md5(body), hashlib.sha256(body).hexdigest(), body)
    assert again.log('main')[0].id == first and again.uncommitted('main')[0].path == 'staged.txt'
    assert {o.path: o.md5 for o in again.list(first, prefix='logs/')} == {p: md5(b) for p, b in many.items()}
    with again.store.connect() as con: assert con.execute('SELECT count(*) FROM blobs WHERE md5 IS NULL').fetchone()[0] == 0
    again.store.close()

def test_upgrade_shows_progress_for_big_lakes(tmp_path, monkeypatch, capsys):
    lake = Lake(tmp_path/'big', user='me')
    lake.create_repository('rrr').put_many('main', {f'o/{i}': str(i).encode() for i in range(30)})
    lake.store.close()
    _make_old_format(tmp_path/'big')
    monkeypatch.setattr(lake_store, 'UPGRADE_PROGRESS_FROM', 10)
    r = Lake(tmp_path/'big', user='me').repository('rrr')
    assert r.stat('main', 'o/7').md5 == md5(b'7')
    assert 'MD5 checksums' in capsys.readouterr().err
    r.store.close()

def test_upgrade_survives_a_lost_object(tmp_path):
    lake = Lake(tmp_path/'lost', user='me')
    r = lake.create_repository('rrr')
    r.put('main', 'kept.txt', b'kept'); r.put('main', 'gone.bin', b'g' * 300_000)
    gone = r.stat('main', 'gone.bin').address
    lake.store.close()
    _make_old_format(tmp_path/'lost')
    lake.store.blob_path(gone).unlink()
    r = Lake(tmp_path/'lost', user='me').repository('rrr')
    assert (r.stat('main', 'kept.txt').md5, r.stat('main', 'gone.bin').md5) == (md5(b'kept'), '')
    r.store.close()

# --- Hidden branches -----------------------------------------------------------------------------------------------------

def test_hidden_branch_is_out_of_listings_but_usable(served):
    lake, srv, client, auth = served
    repo = lakefs.Repository('veiled', client=client).create(storage_namespace='local://veiled')
    hidden = repo.branch('behind-the-curtain').create('main', hidden=True)
    assert [b.id for b in repo.branches()] == ['main']
    hidden.object('stage/prop.txt').upload(b'a prop')
    hidden.commit('set the stage')
    assert hidden.object('stage/prop.txt').reader().read() == b'a prop'
    url = f'{srv.endpoint}/api/v1/repositories/veiled/branches'
    for flag, names in (('true', ['behind-the-curtain', 'main']), ('false', ['main'])):
        assert [b['id'] for b in requests.get(url, params={'show_hidden': flag}, auth=auth).json()['results']] == names
    assert 'behind-the-curtain' not in lake.repository('veiled').branches()
    repo.branch('behind-the-curtain').delete()
    repo.branch('behind-the-curtain').create('main')                 # the name is free again, and this one is visible
    assert [b.id for b in repo.branches()] == ['behind-the-curtain', 'main']

def test_sdk_transaction_branch_is_hidden(served):
    lake, srv, client, auth = served
    repo = lakefs.Repository('txs', client=client).create(storage_namespace='local://txs')
    with repo.branch('main').transact(commit_message='two at once') as tx:
        tx.object('pair/left').upload(b'L'); tx.object('pair/right').upload(b'R')
        assert [b.id for b in repo.branches()] == ['main']          # the SDK's tx branch is hidden
        assert tx.id in lake.repository('txs').branches(show_hidden=True)
    assert repo.branch('main').object('pair/right').reader().read() == b'R'

@pytest.fixture(params=['embedded', 'lakefs-ours'])
def backend_repo(request, served, tmp_path):
    "A fresh repository on the embedded lake, and on the lakeFS backend talking to our server."
    from mlinfra_nb.workspace import Workspace
    from mlinfra_nb.lake.lakefs import LakeFSLake
    lake, srv, client, auth = served
    lk = lake if request.param == 'embedded' else LakeFSLake(srv.endpoint, *auth, workspace=Workspace(tmp_path/'ws', env={}))
    r = lk.create_repository(f'be-{request.param}')
    r.put('main', 'seed.txt', b'seed'); r.commit('main', 'seed')
    yield r

def test_transactions_use_hidden_branches_on_every_backend(backend_repo):
    r = backend_repo
    with r.transaction('main', 'hidden work') as b:
        b.put('work/1.txt', b'one')
        assert b.name.startswith('tx-') and b.name not in r.branches() and b.name in r.branches(show_hidden=True)
        assert r.resolve(b.name).branch == b.name                   # usable by name
    assert r.get('main', 'work/1.txt') == b'one'
    assert not [n for n in r.branches(show_hidden=True) if n.startswith('tx-')]

# --- Cherry-pick ---------------------------------------------------------------------------------------------------------

def test_cherry_pick_through_the_sdk(served):
    lake, srv, client, auth = served
    from lakefs.exceptions import BadRequestException, ConflictException
    repo = lakefs.Repository('orchard', client=client).create(storage_namespace='local://orchard')
    main = repo.branch('main')
    main.object('trees/apple.txt').upload(b'apple v1'); main.object('trees/pear.txt').upload(b'pear v1'); main.commit('plant')
    graft, stock = repo.branch('graft').create('main'), repo.branch('stock').create('main')
    graft.object('trees/quince.txt').upload(b'quince'); graft.commit('unrelated')
    graft.object('trees/apple.txt').upload(b'apple v2'); wanted = graft.commit('better apples', metadata={'season': 'autumn'})
    got = stock.cherry_pick(wanted)
    assert (got.message, got.metadata['season'], got.metadata['cherry-pick-origin']) == ('better apples', 'autumn', wanted.get_commit().id)
    assert got.parents == [repo.branch('stock').get_commit().parents[0]] and len(got.parents) == 1
    assert stock.object('trees/apple.txt').reader().read() == b'apple v2' and not stock.object('trees/quince.txt').exists()
    # the branch changed the same path another way since: refused whole, 409 "conflict found"
    main.object('trees/apple.txt').upload(b'apple v3'); main.commit('other apples')
    with pytest.raises(ConflictException, match='conflict found'): main.cherry_pick(wanted)
    # uncommitted changes: 400, lakeFS's text
    stock.object('trees/plum.txt').upload(b'plum')
    with pytest.raises(BadRequestException, match=r'uncommitted changes \(dirty branch\)'): stock.cherry_pick(wanted)
    stock.reset_changes()
    # a merge commit needs its parent number
    merged = graft.merge_into(main, strategy='source-wins')
    with pytest.raises(BadRequestException, match='must specify 1-based parent number'): stock.cherry_pick(merged)
    stock.cherry_pick(merged, parent_number=1)
    assert stock.object('trees/quince.txt').reader().read() == b'quince'

def test_cherry_pick_overrides_and_protected_branch(served):
    lake, srv, client, auth = served
    r = lake.create_repository('overrides')
    r.create_branch('side'); r.put('side', 'x.txt', b'x'); c = r.commit('side', 'add x', {'a': '1'})
    r.protect('main')                                                  # like merge and revert, allowed on a protected branch
    url = f'{srv.endpoint}/api/v1/repositories/overrides/branches/main/cherry-pick'
    resp = requests.post(url, json={'ref': c.id, 'commit_overrides': {'message': 'x, picked', 'metadata': {'b': '2'}}}, auth=auth)
    assert resp.status_code == 201
    body = resp.json()
    assert (body['message'], body['metadata']) == ('x, picked', {'b': '2', 'cherry-pick-origin': c.id, 'cherry-pick-committer': 'server'})
    assert r.head('main').id == body['id'] and r.get('main', 'x.txt') == b'x'
    empty = r.commit('side', 'nothing', allow_empty=True)
    resp = requests.post(url, json={'ref': empty.id}, auth=auth)
    assert (resp.status_code, 'no changes' in resp.json()['message']) == (400, True)
    assert requests.post(url, json={'ref': 'no-such-ref'}, auth=auth).status_code == 404

def test_cherry_pick_same_on_every_backend(backend_repo):
    r = backend_repo
    r.create_branch('src', 'main'); r.create_branch('dst', 'main')
    r.put('src', 'a.txt', b'a'); r.commit('src', 'first')
    r.put('src', 'b.txt', b'b'); c = r.commit('src', 'second')
    new = r.cherry_pick('dst', c.id)
    assert (new.message, new.metadata['cherry-pick-origin'], new.parents) == ('second', c.id, (r.log('dst')[1].id,))
    assert sorted(o.path for o in r.list('dst')) == ['b.txt', 'seed.txt']
    r.put('dst', 'b.txt', b'other'); r.commit('dst', 'diverge')
    r.put('src', 'b.txt', b'third'); c3 = r.commit('src', 'third')
    from mlinfra_nb.workspace import Conflict
    with pytest.raises(Conflict, match='conflict found'): r.cherry_pick('dst', c3.id)

# --- The lakeFS backend sends only what changed ----------------------------------------------------------------------

def test_backend_skips_unchanged_uploads(served, tmp_path):
    from mlinfra_nb.workspace import Workspace
    from mlinfra_nb.lake.lakefs import LakeFSLake
    lake, srv, client, auth = served
    r = LakeFSLake(srv.endpoint, *auth, workspace=Workspace(tmp_path/'ws', env={})).create_repository('thrifty')
    files = {f'batch/{i}.csv': f'id\n{i}\n'.encode() for i in range(5)}
    r.put_many('main', files)
    puts = lambda: int((lake.audit('thrifty').action == 'put').sum())
    before = puts()
    r.put_many('main', files)                                          # nothing changed: nothing sent
    assert puts() == before
    r.put_many('main', {**files, 'batch/2.csv': b'id\n22\n'})           # one changed: one sent
    assert puts() == before + 1 and r.get('main', 'batch/2.csv') == b'id\n22\n'
    r.put('main', 'batch/3.csv', files['batch/3.csv'], content_type='text/csv')   # same bytes, new content type: sent
    assert puts() == before + 2 and r.stat('main', 'batch/3.csv').content_type == 'text/csv'

# --- Error texts and statuses clients match on -----------------------------------------------------------------------

def _fails(resp, status:int, text:str):
    assert resp.status_code == status and text in resp.json()['message'], (resp.status_code, resp.text)

def test_error_texts_are_lakefs(served):
    lake, srv, client, auth = served
    api = f'{srv.endpoint}/api/v1/repositories'
    r = lake.create_repository('errs')
    r.put('main', 'a.txt', b'a'); r.commit('main', 'a')
    r.create_branch('dev'); r.tag('v1', 'main')
    _fails(requests.post(f'{api}/errs/branches/dev/commits', json={'message': 'empty'}, auth=auth), 400, 'no changes')
    _fails(requests.post(f'{api}/errs/refs/main/merge/dev', json={}, auth=auth), 400, 'no changes')
    _fails(requests.post(f'{api}/errs/tags', json={'id': 'v1', 'ref': 'main'}, auth=auth), 409, 'tag already exists')
    _fails(requests.post(f'{api}/errs/branches', json={'name': 'dev', 'source': 'main'}, auth=auth), 409, 'branch already exists')
    r.put('dev', 'b.txt', b'b'); r.commit('dev', 'b'); r.put('main', 'c.txt', b'c')
    _fails(requests.post(f'{api}/errs/refs/dev/merge/main', json={}, auth=auth), 400, 'main: uncommitted changes (dirty branch)')
    _fails(requests.post(f'{api}/errs/branches/main/revert', json={'ref': 'dev', 'parent_number': 0}, auth=auth), 400, 'uncommitted changes (dirty branch)')
    r.reset('main'); r.protect('main')
    _fails(requests.post(f'{api}/errs/branches/main/objects', params={'path': 'x'}, data=b'x', auth=auth), 403, 'cannot write to protected branch')
    _fails(requests.post(f'{api}/errs/branches/main/commits', json={'message': 'm', 'allow_empty': True}, auth=auth), 403, 'cannot commit to protected branch')
    _fails(requests.delete(f'{api}/errs/branches/main', auth=auth), 403, 'cannot delete repository default branch')
    for url, text in ((f'{api}/nope', 'repository not found'), (f'{api}/errs/branches/nope', 'branch not found'),
                      (f'{api}/errs/tags/nope', 'tag not found'), (f'{api}/errs/refs/main/objects/stat?path=nope', 'not found'),
                      (f'{api}/errs/refs/nope/objects/stat?path=a.txt', 'not found')):
        _fails(requests.get(url, auth=auth), 404, text)

def test_removed_entries_in_a_branch_diff_have_size_zero(served):
    lake, srv, client, auth = served
    repo = lakefs.Repository('sizes', client=client).create(storage_namespace='local://sizes')
    main = repo.branch('main')
    main.object('keep.txt').upload(b'12345'); main.object('drop.txt').upload(b'1234567'); main.commit('two')
    main.object('drop.txt').delete(); main.object('new.txt').upload(b'123')
    assert {(c.path, c.type, c.size_bytes) for c in main.uncommitted()} == {('drop.txt', 'removed', 0), ('new.txt', 'added', 3)}

def test_reset_of_a_path_ending_in_slash_is_accepted(served):
    lake, srv, client, auth = served
    repo = lakefs.Repository('resets', client=client).create(storage_namespace='local://resets')
    main = repo.branch('main')
    for p in ('top', 'dir/a', 'dir/b', 'other/c'): main.object(p).upload(p.encode())
    main.reset_changes('object', 'dir/')                                # names no object: nothing reset, no error
    assert sorted(c.path for c in main.uncommitted()) == ['dir/a', 'dir/b', 'other/c', 'top']
    main.reset_changes('common_prefix', 'dir/')
    assert sorted(c.path for c in main.uncommitted()) == ['other/c', 'top']
