"Fault injection for the embedded lake: SIGKILLed writers, corrupt files on disk, failures inside a transaction, and GC."
import contextlib, hashlib, os, random, select, signal, subprocess, sys, textwrap, threading, time
from pathlib import Path
import pytest
from mlinfra_nb.lake.core import Lake
from mlinfra_nb.workspace import Corrupted, InvalidInput, MlinfraError, NotFound

# Shared by the child writer and the parent checker: what commit c<n> writes, deterministically in n.
BATCH_SRC = textwrap.dedent('''
    import hashlib
    BIG = 256 * 1024 + 17   # above PACK_BELOW: stored as a standalone file, not in a pack

    def batch(n):
        "Objects staged for commit c<n>: new d/<n>/* objects, 'latest' overwritten, tmp/<n> added (tmp/<n-1> is deleted)."
        out = {f'd/{n:05d}/{i}': hashlib.sha256(f'{n}/{i}'.encode()).digest() * (3 + 5 * i) for i in range(1 + n % 4)}
        if n % 3 == 0: out[f'd/{n:05d}/big'] = (hashlib.sha256(f'big{n}'.encode()).digest() * (BIG // 32 + 1))[:BIG]
        out['latest'] = b'latest %d' % n
        out[f'tmp/{n}'] = b'tmp %d' % n
        return out

    def digest(objs):
        h = hashlib.sha256()
        for p in sorted(objs): h.update(p.encode() + b'\\0' + hashlib.sha256(objs[p]).digest())
        return h.hexdigest()

    def tree_at(n):
        "Every object main's tree must hold once c<n> is its head (n = -1: the empty initial commit)."
        tree = {}
        for k in range(n + 1):
            tree.update(batch(k)); tree.pop(f'tmp/{k - 1}', None)
        return tree
''')
exec(BATCH_SRC)  # defines batch, digest, tree_at here too

CHILD_SRC = BATCH_SRC + textwrap.dedent('''
    import os, sys
    from mlinfra_nb.lake.core import Lake
    root, side = sys.argv[1], sys.argv[2]
    lake = Lake(root, user='writer')
    repo = lake.repository('demo')
    # a record torn by the kill (no newline yet) is dropped, so appends start on a fresh line
    data = open(side, 'rb').read() if os.path.exists(side) else b''
    if data and not data.endswith(b'\\n'): os.truncate(side, data.rfind(b'\\n') + 1)
    head = repo.head('main').message
    n = 0 if head == 'Repository created' else int(head[1:]) + 1
    fd = os.open(side, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    print('ready', n, flush=True)
    while True:
        objs = batch(n)
        repo.put_many('main', objs)
        if n and repo.exists('main', f'tmp/{n - 1}'): repo.delete('main', f'tmp/{n - 1}')
        c = repo.commit('main', f'c{n}')
        os.write(fd, f'{n} {c.id} {digest(objs)}\\n'.encode()); os.fsync(fd)   # only now is c<n> 'previously committed'
        n += 1
''')


def read_records(side:Path)->list:
    "(n, commit id, digest) of every complete record the writer made durable."
    if not side.exists(): return []
    lines = side.read_bytes().split(b'\n')[:-1]  # the last piece is empty or a torn record
    return [(int(n), cid, d) for n, cid, d in (l.decode().split() for l in lines)]


def check_lake(root:Path, side:Path, checked:set)->dict:
    "Open the lake afresh and check that what was committed is intact and nothing partial is visible."
    lake = Lake(root, user='checker')   # (a) it opens: DuckDB replays or discards its WAL
    try:
        repo = lake.repository('demo')
        with lake.session():
            log = repo.log('main')
            msgs = [c.message for c in log]
            head_n = len(msgs) - 2
            # (c) main is a linear chain c0..c<head> of whole commits: nothing lost, nothing doubled
            assert msgs == [f'c{k}' for k in range(head_n, -1, -1)] + ['Repository created']
            ids = {c.message: c.id for c in log}
            # (b) every previously committed record is in main's history with its exact content
            recs = read_records(side)
            assert [r[0] for r in recs] == sorted({r[0] for r in recs}), 'records out of order or doubled'
            for n, cid, d in recs:
                assert ids.get(f'c{n}') == cid, f'recorded commit c{n} {cid[:12]} is missing from the log of main'
                if n in checked: continue
                objs = batch(n)
                assert d == digest(objs)
                got = {p: repo.get(cid, p) for p in objs}   # get verifies each object's hash
                assert digest(got) == d, f'commit c{n} reads back different content'
                checked.add(n)
            # (c) main@'s whole tree is exactly the tree of its head message, and every object in it reads back
            want = tree_at(head_n)
            listed = {o.path: o.size for o in repo.list('main@')}
            assert listed == {p: len(b) for p, b in want.items()}, f'main@ at c{head_n} lists {len(listed)} objects, expected {len(want)}'
            for p, b in want.items(): assert repo.get('main@', p) == b, p
            # (d) staging may hold (part of) the next batch, but main@ never shows it
            staged = {ch.path: ch.type for ch in repo.uncommitted('main')}
            nxt = batch(head_n + 1)
            assert set(staged) <= set(nxt) | {f'tmp/{head_n}'}, staged
            for p, t in staged.items():
                if t == 'removed':
                    assert p == f'tmp/{head_n}' and repo.exists('main@', p) and not repo.exists('main', p)
                else:
                    assert repo.get('main', p) == nxt[p]
                    if p in want: assert repo.get('main@', p) == want[p] != nxt[p]
                    else: assert not repo.exists('main@', p)
            return {'head': head_n, 'staged': len(staged), 'records': len(recs)}
    finally:
        lake.store.close()


def start_writer(script:Path, root:Path, side:Path, env:dict, errlog:Path)->tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, str(script), str(root), str(side)], stdout=subprocess.PIPE,
                         stderr=open(errlog, 'ab'), env=env, cwd=script.parent)
    ready, _, _ = select.select([p.stdout], [], [], 60)
    line = p.stdout.readline() if ready else b''
    if not line.startswith(b'ready'):
        with contextlib.suppress(ProcessLookupError): os.kill(p.pid, signal.SIGKILL)
        p.wait()
        pytest.fail(f'writer did not start: {line!r}\n{errlog.read_text()[-3000:]}')
    return p, int(line.split()[1])


def test_sigkill_mid_commit_never_loses_or_tears_commits(tmp_path, clean_env):
    root, side, script, errlog = tmp_path/'lake', tmp_path/'committed.txt', tmp_path/'writer.py', tmp_path/'writer.err'
    script.write_text(CHILD_SRC)
    lk = Lake(root, user='setup'); lk.create_repository('demo'); lk.store.close()
    rng = random.Random(20240611)
    # very short delays land in the first put/commit; the rest spread kills over every phase of later cycles
    delays = [0.0, 0.001, 0.003, 0.006, 0.01, 0.02, 0.03] + [rng.uniform(0.0, 0.35) for _ in range(13)]
    rng.shuffle(delays)
    checked, seen, t0 = set(), [], time.monotonic()
    for i, delay in enumerate(delays):
        p, start_n = start_writer(script, root, side, clean_env, errlog)
        time.sleep(delay)
        assert p.poll() is None, f'writer died on its own:\n{errlog.read_text()[-3000:]}'
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait() == -signal.SIGKILL
        st = check_lake(root, side, checked)
        assert st['head'] >= start_n - 1   # the writer continued from the state it found
        seen.append(st)
        if time.monotonic() - t0 > 120: break   # a slow machine: stop killing, keep what was checked
    assert len(seen) >= 8
    assert seen[-1]['head'] >= 5 and seen[-1]['records'] >= 3, seen   # the writer made real progress between kills
    # GC (no grace) after all the crashes: committed history survives, orphans of killed transactions go
    lk = Lake(root, user='gc')
    try:
        lk.gc(grace=0)
        assert not [f for f in root.rglob('*.tmp')], 'temporary files of killed writers survive gc'
        repo = lk.repository('demo')
        for n, cid, d in read_records(side):
            assert digest({p: repo.get(cid, p) for p in batch(n)}) == d
    finally: lk.store.close()
    check_lake(root, side, set())


def test_sigkill_inside_transaction_rolls_back_whole(tmp_path, clean_env):
    "A writer killed while holding the lock inside one transaction (put + commit done, not yet committed) leaves no trace."
    root = tmp_path/'lake'
    lk = Lake(root, user='setup'); repo = lk.create_repository('demo')
    repo.put('main', 'a', b'A'); c0 = repo.commit('main', 'c0'); lk.store.close()
    code = textwrap.dedent(f'''
        import time
        from mlinfra_nb.lake.core import Lake
        lake = Lake({str(root)!r}, user='doomed'); repo = lake.repository('demo')
        with lake.store.transaction():
            repo.put_many('main', {{'a': b'changed', 'b': b'B' * 300000, 'c/d': b'D'}})
            repo.commit('main', 'never')
            repo.create_branch('ghost', 'main')
            print('inside', flush=True)
            time.sleep(120)
    ''')
    p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env, cwd=tmp_path)
    ready, _, _ = select.select([p.stdout], [], [], 60)
    assert ready and p.stdout.readline() == b'inside\n', p.stderr.read() if p.poll() is not None else ''
    os.kill(p.pid, signal.SIGKILL); p.wait()
    lk = Lake(root, user='after')
    try:
        t = time.monotonic()
        repo = lk.repository('demo')
        assert time.monotonic() - t < 5   # the dead writer's lock went with it
        assert repo.head('main').id == c0.id and [c.message for c in repo.log('main')] == ['c0', 'Repository created']
        assert repo.uncommitted('main') == [] and set(repo.branches(show_hidden=True)) == {'main'}
        assert repo.get('main', 'a') == b'A' and not repo.exists('main', 'b')
        assert {r['action'] for _, r in lk.audit(limit=1000).iterrows()} == {'create_repository', 'put', 'commit'}
        assert len(lk.audit(limit=1000)) == 3
        repo.put('main', 'b', b'again'); assert repo.commit('main', 'c1').parents == (c0.id,)   # and it still works
    finally: lk.store.close()


# --- corrupt or missing files on disk -------------------------------------------------------------

def flip_byte(path:Path, offset:int):
    b = bytearray(path.read_bytes()); b[offset] ^= 0xFF; path.write_bytes(bytes(b))


def test_corrupt_standalone_object_raises_corrupted(lake, repo):
    data = b'standalone object ' * 100
    repo.put('main', 'models/w.bin', data); c = repo.commit('main', 'add w')
    f = lake.root/'objects'/hashlib.sha256(data).hexdigest()[:2]/hashlib.sha256(data).hexdigest()
    assert f.read_bytes() == data   # one object put alone is a standalone file
    flip_byte(f, 7)
    for ref in ('main', 'main@', c.id):
        with pytest.raises(Corrupted, match=rf"object demo/{ref}/models/w.bin is corrupt: its content no longer matches its hash {hashlib.sha256(data).hexdigest()[:12]}"):
            repo.get(ref, 'models/w.bin')
    assert issubclass(Corrupted, MlinfraError)
    assert repo.stat('main', 'models/w.bin').size == len(data)   # metadata is intact; only the bytes are refused


def test_corrupt_packed_object_only_fails_that_object(lake, repo):
    objs = {f'p/{i}': f'packed object number {i} '.encode() * 20 for i in range(5)}
    repo.put_many('main', objs); repo.commit('main', 'packed')
    packs = list((lake.root/'packs').glob('*.pack'))
    assert len(packs) == 1
    blob = packs[0].read_bytes()
    flip_byte(packs[0], blob.index(objs['p/3']) + 11)
    with pytest.raises(Corrupted, match=r"object demo/main/p/3 is corrupt"):
        repo.get('main', 'p/3')
    for p in ('p/0', 'p/1', 'p/2', 'p/4'): assert repo.get('main', p) == objs[p]


def test_missing_or_truncated_object_file_raises_corrupted(lake, repo):
    a, b = b'a' * 5000, b'b' * 6000
    repo.put('main', 'a', a); repo.put('main', 'b', b); repo.commit('main', 'two')
    fa = lake.root/'objects'/hashlib.sha256(a).hexdigest()[:2]/hashlib.sha256(a).hexdigest()
    fb = lake.root/'objects'/hashlib.sha256(b).hexdigest()[:2]/hashlib.sha256(b).hexdigest()
    fa.unlink()
    with pytest.raises(Corrupted, match=r"object demo/main/a \([0-9a-f]{12}\) is missing from disk"): repo.get('main', 'a')
    fb.write_bytes(b[:100])
    with pytest.raises(Corrupted, match=r"object demo/main/b is corrupt"): repo.get('main', 'b')


def damage_catalog(root:Path, how:str):
    "Make the catalog of the lake at `root` unreadable: garbage bytes, zeros, a torn-off header, or a directory in its place."
    cat = root/'catalog.duckdb'
    if how == 'garbage': cat.write_bytes(b'this is not a DuckDB file ' * 4000)
    elif how == 'zeros': cat.write_bytes(b'\0' * cat.stat().st_size)
    elif how == 'torn': cat.write_bytes(cat.read_bytes()[:6000])
    elif how == 'directory': cat.unlink(); cat.mkdir(); (cat/'x').write_bytes(b'x')


@pytest.mark.parametrize('how', ['garbage', 'zeros', 'torn', 'directory'])
def test_damaged_catalog_is_one_clear_error(tmp_path, mlinfra, clean_env, how):
    root = tmp_path/'lake'
    lk = Lake(root, user='setup'); lk.create_repository('demo').put('main', 'a', b'A'); lk.store.close()
    damage_catalog(root, how)
    msg = rf"the lake catalog {root/'catalog.duckdb'} cannot be opened: .+; move it aside and restore it from a backup"
    lk = Lake(root, user='after')
    with pytest.raises(Corrupted, match=msg): lk.repository('demo')
    with pytest.raises(Corrupted, match=msg): lk.create_repository('other')   # the lake stays usable as an object: same error, no hang
    lk.store.close()
    r = subprocess.run([mlinfra, 'lake', 'credentials', 'list', '--root', str(root)], env=clean_env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and 'Traceback' not in r.stderr and r.stderr.count('\n') == 1, r.stderr
    assert r.stderr.startswith(f"mlinfra: error: the lake catalog {root/'catalog.duckdb'} cannot be opened: "), r.stderr


def test_lake_root_that_is_a_file(tmp_path, mlinfra, clean_env):
    (tmp_path/'lake').write_text('not a folder')
    with pytest.raises(InvalidInput, match=rf"lake root {tmp_path/'lake'} exists and is not a directory"): Lake(tmp_path/'lake')
    r = subprocess.run([mlinfra, 'lake', 'credentials', 'list', '--root', str(tmp_path/'lake')], env=clean_env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'exists and is not a directory' in r.stderr, r.stderr


def test_lake_files_are_private_whatever_the_umask(tmp_path):
    "With the common umask 022 every file under a lake is still 0600 and every folder 0700: other users can read nothing."
    import pandas as pd
    from mlinfra_nb.lake.server import create_credentials
    from mlinfra_nb.workspace import Workspace
    def exposed(root):
        return [(str(p.relative_to(root.parent)), oct(p.stat().st_mode & 0o777)) for p in [root, *root.rglob('*')]
                if p.stat().st_mode & 0o077]
    old = os.umask(0o022)
    try:
        lakes = [Lake(tmp_path/'lake', user='owner'), Lake(workspace=Workspace(tmp_path/'ws', env={}), user='owner')]
        for lk in lakes:
            repo = lk.create_repository('demo')
            repo.put_many('main', {'small/a': b'a', 'small/b': b'b', 'big': b'B' * 300_000})   # a pack and a standalone object
            repo.put('main', 'one', b'one object alone')
            repo.write_table('main', 'tables/t', pd.DataFrame({'x': range(100)}))              # a Parquet part, moved in from tmp/
            repo.commit('main', 'c1')
            with repo.transaction('main', 'tx') as b: b.put('tx/x', b'x')
            create_credentials(lk, 'someone')
            lk.gc(grace=0)
            with lk.session():                      # the catalog is open and its write-ahead log exists
                repo.put('main', 'more', b'more'); repo.commit('main', 'c2')
                assert (lk.root/'catalog.duckdb.wal').exists()
                assert exposed(lk.root) == []
            lk.store.close()
            assert exposed(lk.root) == []
            files = {p.relative_to(lk.root).parts[0] for p in lk.root.rglob('*') if p.is_file()}
            assert {'catalog.duckdb', 'lake.lock', 'objects', 'packs'} <= files, files
    finally: os.umask(old)


# --- a failure inside a transaction (not a kill): the process goes on using the lake -------------

def test_failed_commit_leaves_nothing_and_retry_is_whole(lake, repo, monkeypatch):
    objs = {f'a{i}': b'%d' % i for i in range(5)}
    repo.put_many('main', objs)
    orig = Lake._audit
    def failing_audit(self, con, repo_, action, ref='', **detail):
        if action == 'commit': raise OSError(28, 'No space left on device')   # the catalog write fails late in the commit
        return orig(self, con, repo_, action, ref, **detail)
    monkeypatch.setattr(Lake, '_audit', failing_audit)
    with pytest.raises(OSError): repo.commit('main', 'x')
    monkeypatch.setattr(Lake, '_audit', orig)
    assert repo.head('main').message == 'Repository created' and len(repo.uncommitted('main')) == 5
    repo.create_branch('side', 'main'); repo.put_many('side', {'y': b'y', 'z': b'z'}); repo.commit('side', 'side')
    repo.commit('main', 'x')
    assert [o.path for o in repo.list('main')] == sorted(objs)
    assert [ch.path for ch in repo.diff('main~1', 'main')] == sorted(objs)


# --- garbage collection ---------------------------------------------------------------------------

def test_gc_never_removes_committed_objects(lake, repo):
    big = b'B' * (300 * 1024)
    repo.put_many('main', {'keep/a': b'a' * 10, 'keep/b': b'b' * 10, 'keep/big': big}); c1 = repo.commit('main', 'c1')
    repo.delete('main', 'keep/a'); repo.put('main', 'keep/b', b'b2'); c2 = repo.commit('main', 'c2')   # old versions stay in history
    repo.tag('v1', 'main')
    repo.create_branch('dev', 'main'); repo.put_many('dev', {'dev/x': b'x' * 20, 'dev/y': b'y' * 20}); repo.commit('dev', 'dev')
    repo.create_branch('scratch', 'main')
    repo.put_many('scratch', {'s/dead': b'dead' * 50, 's/dead2': b'dead2' * 50, 's/bigdead': b'D' * (300 * 1024)}); repo.commit('scratch', 's')
    repo.delete_branch('scratch')                          # its commit is now unreachable
    repo.put('main', 'staged/only', b'staged, never committed')
    repo.create_branch('moved', 'main'); repo.put('moved', 'm', b'moved away'); m = repo.commit('moved', 'm')
    repo.hard_reset('moved', c1.id)                        # m is unreachable too
    out = lake.gc(grace=0)
    assert out['objects'] == 4 and out['files'] >= 2       # s/dead, s/dead2, s/bigdead, m
    for ref, p, b in [(c1.id, 'keep/a', b'a' * 10), (c1.id, 'keep/b', b'b' * 10), (c1.id, 'keep/big', big), (c2.id, 'keep/b', b'b2'),
                      ('v1', 'keep/big', big), ('dev', 'dev/x', b'x' * 20), ('dev', 'dev/y', b'y' * 20),
                      ('main', 'staged/only', b'staged, never committed'), ('moved', 'keep/a', b'a' * 10)]:
        assert repo.get(ref, p) == b, (ref, p)
    with pytest.raises(NotFound, match='garbage-collected'): repo.get(m.id, 'm')
    assert lake.gc(grace=0)['objects'] == 0                # idempotent


def test_gc_does_not_delete_an_object_readded_concurrently(lake, repo, monkeypatch, clean_env, tmp_path):
    big = b'R' * (300 * 1024)   # standalone: its file name is its address
    repo.create_branch('tmp', 'main'); repo.put('tmp', 'big', big); repo.commit('tmp', 'big'); repo.delete_branch('tmp')
    writer = textwrap.dedent(f'''
        from mlinfra_nb.lake.core import Lake
        lake = Lake({str(lake.root)!r}, user='other'); repo = lake.repository('demo')
        repo.put('main', 'again', {big[:1]!r} * {len(big)}); print(repo.commit('main', 'again').id)
    ''')
    orig, fired = lake.store.transaction, []
    @contextlib.contextmanager
    def transaction():   # the other process asks for the lock the moment gc's catalog transaction ends
        with orig() as con: yield con
        if not fired:
            fired.append(subprocess.Popen([sys.executable, '-c', writer], env=clean_env, cwd=tmp_path,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            time.sleep(0.5)  # give it time to block on the lock gc still holds
    monkeypatch.setattr(lake.store, 'transaction', transaction)
    lake.gc()   # default grace
    monkeypatch.undo()
    assert fired
    out, err = fired[0].communicate(timeout=60)
    assert fired[0].returncode == 0, err
    assert repo.get('main', 'again') == big


# --- debris of killed writers: temporary files and abandoned transactions ------------------------------

KILLED_TX = textwrap.dedent('''
    import sys, time
    import pandas as pd, pyarrow.parquet as pq
    import mlinfra_nb.lake.tables
    from mlinfra_nb.lake.core import Lake
    repo = Lake(sys.argv[1], user='doomed').repository('demo')
    real = pq.write_table
    def write_then_hang(*a, **k):   # write_table's temporary Parquet is complete on disk, not yet stored: the kill comes now
        real(*a, **k); print('parquet written', flush=True); time.sleep(600)
    with repo.transaction('main', 'never lands') as b:
        b.put_many({'tx/big': b'T' * 300_000, 'tx/a': b'a' * 50, 'tx/b': b'b' * 60}); b.commit('half way')
        b.put('tx/staged', b'staged, never committed' * 10)
        print(b.name, b.head().id, flush=True)
        pq.write_table = write_then_hang
        b.write_table('tables/t', pd.DataFrame({'x': range(1000)}))
''')

def test_gc_clears_what_a_killed_transaction_left(tmp_path, clean_env):
    "SIGKILL inside a transaction, in write_table after its temporary Parquet is written: gc drops the branch, the temporary file and the objects only they held."
    root = tmp_path/'lake'
    lk = Lake(root, user='setup'); repo = lk.create_repository('demo')
    keep = {'keep/big': b'K' * 300_000, 'keep/a': b'ka', 'keep/b': b'kb'}
    repo.put_many('main', keep); c0 = repo.commit('main', 'c0'); lk.store.close()
    p = subprocess.Popen([sys.executable, '-c', KILLED_TX, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env, cwd=tmp_path)
    watchdog = threading.Timer(120, p.kill); watchdog.start()   # a child that never gets there is killed: its lines end early
    try: lines = [p.stdout.readline().decode() for _ in range(2)]
    finally: watchdog.cancel()
    if lines[-1] != 'parquet written\n':
        os.kill(p.pid, signal.SIGKILL); p.wait(); pytest.fail(f'{lines} {p.stderr.read().decode()[-3000:]}')
    os.kill(p.pid, signal.SIGKILL); assert p.wait() == -signal.SIGKILL
    tx, tx_head = lines[0].split()
    lk = Lake(root, user='gc')
    try:
        repo = lk.repository('demo')
        # the debris: the transaction's branch (a commit and staged objects) and write_table's temporary Parquet
        assert set(repo.branches(show_hidden=True)) == {'main', tx} and repo.head(tx).id == tx_head
        assert [f.suffix for f in (root/'tmp').iterdir()] == ['.parquet']
        tx_only = [lk.store.blob_path(hashlib.sha256(b'T' * 300_000).hexdigest())]
        assert all(f.exists() for f in tx_only)
        # with the default grace period it is too young to touch
        out = lk.gc()
        assert (out['transactions'], out['temp_files']) == ([], 0) and tx in repo.branches(show_hidden=True)
        # with none, it goes, and what only it referenced goes with it
        out = lk.gc(grace=0)
        assert out['transactions'] == [f'demo/{tx}'] and out['temp_files'] == 1
        assert out['objects'] == 4, out                           # tx/big, tx/a, tx/b (a pack) and tx/staged
        assert set(repo.branches(show_hidden=True)) == {'main'} and not list((root/'tmp').iterdir())
        assert not any(f.exists() for f in tx_only)
        with pytest.raises(NotFound, match='garbage-collected'): repo.get(tx_head, 'tx/big')
        # main is intact
        assert repo.head('main').id == c0.id and repo.uncommitted('main') == []
        assert {p: repo.get('main', p) for p in keep} == keep
        a = lk.audit('demo')
        assert a.action.iloc[0] == 'drop_transaction' and a.ref.iloc[0] == tx and a.actor.iloc[0] == 'gc'
        with lk.session() as con: assert con.execute("SELECT count(*) FROM transactions").fetchall() == [(0,)]
        assert lk.gc(grace=0) == {'objects': 0, 'files': 0, 'bytes': 0, 'temp_files': 0, 'transactions': []}
    finally: lk.store.close()


LIVE_TX = textwrap.dedent('''
    import sys
    import mlinfra_nb.lake.tables
    from mlinfra_nb.lake.core import Lake
    repo = Lake(sys.argv[1], user='slow').repository('demo')
    with repo.transaction('main', 'slow but alive') as b:
        b.put_many({'live/big': b'L' * 300_000, 'live/a': b'la', 'live/b': b'lb'}); b.commit('step 1')
        b.put('live/staged', b'staged')
        print(b.name, flush=True)
        sys.stdin.readline()    # holds the transaction open until told to go on
    print('merged', flush=True)
''')

def test_gc_never_drops_a_live_transaction(tmp_path, clean_env):
    "A transaction open in another process, however short the grace period, keeps its branch and objects, and lands afterwards."
    root = tmp_path/'lake'
    lk = Lake(root, user='setup'); lk.create_repository('demo'); lk.store.close()
    p = subprocess.Popen([sys.executable, '-c', LIVE_TX, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=clean_env, cwd=tmp_path)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 120)
        tx = p.stdout.readline().decode().strip() if ready else ''
        assert tx.startswith('tx-main-'), p.stderr.read().decode()[-3000:] if p.poll() is not None else tx
        lk = Lake(root, user='gc')
        try:
            out = lk.gc(grace=0)
            assert out['transactions'] == [] and out['objects'] == 0, out
            repo = lk.repository('demo')
            assert tx in repo.branches(show_hidden=True) and repo.get(tx, 'live/big') == b'L' * 300_000 and repo.get(tx, 'live/staged') == b'staged'
        finally: lk.store.close()
        out, err = p.communicate(b'go\n', timeout=120)
        assert p.returncode == 0 and out.decode().strip() == 'merged', err.decode()[-3000:]
    finally:
        if p.poll() is None: p.kill(); p.wait()
    lk = Lake(root, user='after')
    try:
        repo = lk.repository('demo')
        assert set(repo.branches(show_hidden=True)) == {'main'} and repo.get('main', 'live/big') == b'L' * 300_000 and repo.get('main', 'live/staged') == b'staged'
        assert lk.gc(grace=0)['transactions'] == []
    finally: lk.store.close()
