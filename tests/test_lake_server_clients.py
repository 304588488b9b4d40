"""Official lakeFS clients as users of our server: the unmodified `lakefs` SDK, lakefs-spec with DuckDB, several clients at once,
and `mlinfra lake serve` as a separate process."""
import socket, subprocess, sys, threading, time, urllib.request
import duckdb, lakefs, pandas as pd, pytest
from lakefs.exceptions import ConflictException, ForbiddenException, NotAuthorizedException, NotFoundException
from lakefs_spec import LakeFSFileSystem
from mlinfra_nb.lake import Lake
from mlinfra_nb.lake.server import LakeServer, create_credentials

@pytest.fixture
def served(tmp_path):
    lake = Lake(tmp_path/'lake', user='server')
    key = create_credentials(lake, 'alice')
    with LakeServer(lake) as srv:
        yield lake, srv, lakefs.Client(host=srv.endpoint, username=key.access_key_id, password=key.secret_access_key), key
    lake.store.close()

def test_sdk_lifecycle(served):
    lake, srv, client, _ = served
    repo = lakefs.Repository('sdk', client=client).create(storage_namespace='local://sdk')
    assert repo.properties.default_branch == 'main'
    main = repo.branch('main')
    main.object('raw/a.csv').upload(b'x,y\n1,2\n', content_type='text/csv', metadata={'source': 'test'})
    assert [c.path for c in main.uncommitted()] == ['raw/a.csv']
    first = main.commit('add a', metadata={'k': 'v'})
    assert first.get_commit().metadata == {'k': 'v'} and first.get_commit().committer == 'alice'
    dev = repo.branch('dev').create(main)
    dev.object('raw/b.csv').upload(b'b')
    dev.object('raw/a.csv').delete()
    dev.commit('b in, a out')
    assert {(d.type, d.path) for d in main.diff(dev)} == {('added', 'raw/b.csv'), ('removed', 'raw/a.csv')}
    assert sorted(b.id for b in repo.branches()) == ['dev', 'main']
    merged = dev.merge_into(main)
    assert main.head.id == merged
    assert [o.path for o in main.objects()] == ['raw/b.csv']
    assert main.object('raw/b.csv').reader().read() == b'b'
    with main.object('raw/big.bin').writer(mode='wb') as w: w.write(b'0123456789' * 1000)   # the SDK's streaming writer
    with main.object('raw/big.bin').reader() as r:
        r.seek(5); assert r.read(7) == b'5678901'   # ranged reads
    repo.tag('v1').create(merged)
    assert [t.id for t in repo.tags()] == ['v1']
    main.commit('big')
    main.revert(main.head.id)
    assert not main.object('raw/big.bin').exists()
    main.object('scratch').upload(b's'); main.reset_changes()
    assert list(main.uncommitted()) == []
    assert [c.message for c in main.log(max_amount=2)][1] == 'big'
    assert lake.repository('sdk').get('v1', 'raw/b.csv') == b'b'   # it all happened in the embedded lake

def test_sdk_errors(served):
    lake, srv, client, key = served
    repo = lakefs.Repository('errs', client=client).create(storage_namespace='local://errs')
    with pytest.raises(NotFoundException): repo.branch('nope').head
    with pytest.raises(NotFoundException): repo.branch('main').object('missing').reader().read()
    with pytest.raises(ConflictException): repo.branch('main').create('main')
    lake.repository('errs').protect('main')
    with pytest.raises(ForbiddenException): repo.branch('main').object('x').upload(b'x')
    bad = lakefs.Client(host=srv.endpoint, username=key.access_key_id, password='not-the-secret')
    with pytest.raises(NotAuthorizedException): list(lakefs.repositories(client=bad))

def test_sdk_paging(served):
    lake, srv, client, _ = served
    r = lake.create_repository('paging')
    for i in range(120): r.commit('main', f'c{i}', allow_empty=True)
    r.put_many('main', {f'obj/{i:04d}': b'x' for i in range(250)})
    main = lakefs.Repository('paging', client=client).branch('main')
    assert len(list(main.objects(prefix='obj/'))) == 250            # three pages of 100
    assert len(list(main.uncommitted())) == 250
    assert len(list(main.log())) == 121                              # two pages of log, and the first commit

def test_lakefs_spec_and_duckdb(served, tmp_path):
    lake, srv, client, key = served
    lake.create_repository('spec')
    fs = LakeFSFileSystem(host=srv.endpoint, username=key.access_key_id, password=key.secret_access_key)
    df = pd.DataFrame({'user': list('abcde'), 'amount': [1.0, 2.0, 3.0, 4.0, 5.0]})
    local = tmp_path/'tx.parquet'; df.to_parquet(local)
    with fs.transaction('spec', 'main') as tx:                       # lakefs-spec's ephemeral branch, committed and merged
        fs.put_file(str(local), f'lakefs://spec/{tx.branch.id}/tables/tx.parquet')
        tx.commit(message='add tx via lakefs-spec')
    assert fs.ls('lakefs://spec/main/tables/', detail=False) == ['spec/main/tables/tx.parquet']
    con = duckdb.connect(); con.register_filesystem(fs)
    assert con.sql("SELECT count(*), sum(amount) FROM read_parquet('lakefs://spec/main/tables/tx.parquet')").fetchall() == [(5, 15.0)]
    with fs.open('lakefs://spec/main/notes.txt', 'wb') as f: f.write(b'hello')
    assert fs.cat('lakefs://spec/main/notes.txt') == b'hello'
    assert 'add tx via lakefs-spec' in [c.message for c in lake.repository('spec').log('main')]

def test_concurrent_clients(served):
    "Eight SDK clients each branch, write, commit and merge at once, while this process writes to the same lake directly."
    lake, srv, client, key = served
    lake.create_repository('busy')
    errors = []
    def worker(i):
        try:
            c = lakefs.Client(host=srv.endpoint, username=key.access_key_id, password=key.secret_access_key)
            b = lakefs.Repository('busy', client=c).branch(f'w{i}').create('main')
            for j in range(5): b.object(f'w{i}/{j}').upload(f'{i}-{j}'.encode())
            b.commit(f'worker {i}')
            for attempt in range(20):   # merges into main race; lakeFS clients retry a 409/423 the same way
                try: b.merge_into('main'); break
                except ConflictException: time.sleep(0.05)
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads: t.start()
    direct = lake.repository('busy')
    direct.create_branch('direct', 'main')
    for j in range(20): direct.put('direct', f'direct/{j}', b'd')
    direct.commit('direct', 'direct writes')
    for t in threads: t.join(60)
    assert not errors, errors
    direct.merge('direct', into='main')
    paths = {o.path for o in direct.list('main')}
    assert paths == {f'w{i}/{j}' for i in range(8) for j in range(5)} | {f'direct/{j}' for j in range(20)}
    assert all(direct.get('main', f'w{i}/{j}') == f'{i}-{j}'.encode() for i in range(8) for j in range(5))

def test_serve_command(tmp_path, clean_env):
    "`mlinfra lake serve` as its own process, stopped by its pid; another process writes the same lake meanwhile."
    root = str(tmp_path/'lake')
    Lake(root).create_repository('shared')
    key = create_credentials(Lake(root), 'ops')
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, '-c', 'import sys; from mlinfra_nb.cli import main; sys.exit(main())', 'lake', 'serve',
                             '--root', root, '--port', str(port)], env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            assert proc.poll() is None, proc.stderr.read()
            try: urllib.request.urlopen(f'http://127.0.0.1:{port}/api/v1/healthcheck', timeout=1); break
            except OSError: time.sleep(0.1)
        c = lakefs.Client(host=f'http://127.0.0.1:{port}', username=key.access_key_id, password=key.secret_access_key)
        b = lakefs.Repository('shared', client=c).branch('main')
        b.object('from-sdk').upload(b'1'); b.commit('via the server')
        here = Lake(root).repository('shared')
        here.put('main', 'from-here', b'2'); here.commit('main', 'directly')
        assert sorted(o.path for o in b.objects()) == ['from-here', 'from-sdk']
    finally:
        proc.terminate(); proc.wait(10)
    assert 'serving the lake' in proc.stdout.read()

def test_pipeline_switches_backend_by_configuration(served, mlinfra, clean_env, tmp_path):
    "The same `mlinfra run` works on lakeFS when only the three LAKEFS_* variables change (the step notebooks' kernels inherit them)."
    lake, srv, client, key = served
    env = {**clean_env, 'LAKEFS_ENDPOINT': srv.endpoint, 'LAKEFS_ACCESS_KEY_ID': key.access_key_id, 'LAKEFS_SECRET_ACCESS_KEY': key.secret_access_key}
    r = subprocess.run([mlinfra, 'run', '--steps', 'ingest,validate,features', '-p', 'rows', '2000'], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'merged into main' in r.stdout
    assert lake.repository('pipeline').table_info('main', 'tables/transactions').rows == 2000   # the server's lake has the data
    assert lake.repository('pipeline').table_info('main', 'features/valid').rows > 0
    assert not (tmp_path/'home'/'lake').exists()   # and no embedded lake was made on the side

def test_sdk_and_spec_extras(served):
    "Operations the review against lakeFS's spec found missing or different: copies, git-style tag names, version, paging, 501s."
    lake, srv, client, key = served
    repo = lakefs.Repository('extras', client=client).create(storage_namespace='local://extras')
    main = repo.branch('main')
    main.object('a.txt').upload(b'a', metadata={'k': 'v'})
    copied = main.object('a.txt').copy('main', 'b.txt')                                    # SDK copy
    assert copied.reader().read() == b'a' and copied.stat().metadata == {'k': 'v'}
    main.commit('a and its copy')
    repo.tag('v1.2.0').create('main')                                                      # a release-style tag name
    assert main.object('a.txt').reader().read() == repo.ref('v1.2.0').object('b.txt').reader().read()
    fs = LakeFSFileSystem(host=srv.endpoint, username=key.access_key_id, password=key.secret_access_key)
    fs.cp('lakefs://extras/main/a.txt', 'lakefs://extras/main/c.txt')                      # lakefs-spec copy
    fs.touch('lakefs://extras/main/empty')                                                 # needs a numeric server version
    assert fs.cat('lakefs://extras/main/c.txt') == b'a' and fs.cat('lakefs://extras/main/empty') == b''
    assert client.version.count('.') == 2 and all(p.isdigit() for p in client.version.split('.'))
    from lakefs.exceptions import BadRequestException
    with pytest.raises(BadRequestException, match=r'uncommitted changes \(dirty branch\)'): main.cherry_pick('v1.2.0')   # served; main has staged copies

def test_rest_details(served):
    "Details lakectl relies on: first-parent logs, amount clamping, protection ETags, conditional uploads, bulk delete answers."
    import httpx
    lake, srv, client, key = served
    r = lake.create_repository('details')
    r.create_branch('side', 'main'); r.put('side', 's', b's'); r.commit('side', 'side work')
    r.put('main', 'm', b'm'); r.commit('main', 'main work'); r.merge('side', into='main')
    with httpx.Client(base_url=srv.endpoint + '/api/v1/repositories/details', auth=(key.access_key_id, key.secret_access_key)) as c:
        first = c.get('/refs/main/commits', params={'first_parent': 'true'}).json()['results']
        assert [x['message'] for x in first] == ["Merge 'side' into 'main'", 'main work', 'Repository created']
        two = c.get('/refs/main/commits', params={'first_parent': 'true', 'amount': 2}).json()
        assert len(two['results']) == 2 and two['pagination']['has_more']
        assert len(c.get('/refs/main/commits', params={'amount': 0}).json()['results']) == 4   # 0 means the default page, as in lakeFS
        g = c.get('/settings/branch_protection'); etag = g.headers['etag']
        assert c.put('/settings/branch_protection', json=[{'pattern': 'main'}], headers={'If-Match': etag}).status_code == 204
        stale = c.put('/settings/branch_protection', json=[], headers={'If-Match': etag})
        assert stale.status_code == 412 and r.protection_rules() == ['main']
        put = lambda path, data, **h: c.post('/branches/side/objects', params={'path': path}, content=data, headers=h)
        assert put('s', b'new', **{'If-None-Match': '*'}).status_code == 412                  # exists already
        etag_s = c.get('/refs/side/objects/stat', params={'path': 's'}).json()['checksum']
        assert put('s', b'v2', **{'If-Match': '"nope"'}).status_code == 412
        assert put('s', b'v2', **{'If-Match': f'"{etag_s}"'}).status_code == 201 and r.get('side', 's') == b'v2'
        d = c.post('/branches/side/objects/delete', json={'paths': ['s', 'not-there']})
        assert d.status_code == 200 and d.json() == {'errors': []}
        assert c.get(srv.endpoint + '/api/v1/setup_lakefs').json()['state'] == 'initialized'
