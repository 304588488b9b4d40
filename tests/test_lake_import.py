"Importing a folder: the packing process stores exactly what this process would, encrypted or not, and a failure or a kill mid-import stages whole batches only and leaves nothing that gc keeps."
import hashlib, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
from mlinfra_nb.lake.core import Lake
from mlinfra_nb.lake.store import PACK_BELOW, Packer, generate_key
from mlinfra_nb.workspace import MlinfraError

def make_folder(root:Path, n:int=240)->dict:
    "A folder of `n` files (empty, small, duplicated, and one above PACK_BELOW) in nested folders; returns relative path -> bytes."
    files = {}
    for i in range(n):
        data = b'' if i == 0 else b'x' * (PACK_BELOW + 11) if i == 1 else f'row {i % 97}\n'.encode() * (1 + i % 5)   # i % 97: duplicates
        rel = f'part={i % 4}/f{i:04d}.txt'
        (root/rel).parent.mkdir(parents=True, exist_ok=True); (root/rel).write_bytes(data); files[rel] = data
    return files

def imported(tmp_path:Path, name:str, processes:int, key=None, batch:int=50):
    src = tmp_path/'src'
    files = make_folder(src) if not src.exists() else {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob('*') if p.is_file()}
    repo = Lake(tmp_path/name, key=key).create_repository('imports')
    assert repo.import_directory('main', src, prefix='in/', batch=batch, processes=processes) == len(files)
    repo.commit('main', 'import')
    return repo, files

def referenced_files(lake)->set:
    with lake.store.connect() as con: return {f for (f,) in con.execute("SELECT DISTINCT file FROM blobs").fetchall()}

@pytest.mark.parametrize('encrypted', [False, True])
def test_second_process_stores_what_this_one_would(tmp_path, encrypted):
    key = generate_key() if encrypted else None
    one, files = imported(tmp_path, 'one', 1, key)
    two, _ = imported(tmp_path, 'two', 2, key)
    shape = lambda repo: [(o.path, o.address, o.size, o.md5, o.content_type, o.metadata) for o in repo.list('main')]
    assert shape(one) == shape(two) and len(shape(two)) == len(files)
    assert {p: two.get('main', 'in/' + p) for p in files} == files
    assert {o.md5 for o in two.list('main')} == {hashlib.md5(d).hexdigest() for d in files.values()}
    if encrypted:   # no plain byte of any file on disk
        disk = b''.join(p.read_bytes() for p in (tmp_path/'two').rglob('*') if p.is_file() and 'catalog' not in p.name)
        assert b'row 5\n' not in disk and b'x' * 64 not in disk

@pytest.mark.parametrize('processes', [1, 2])
def test_an_unreadable_file_stages_the_batches_before_it_only(tmp_path, processes):
    src = tmp_path/'src'; make_folder(src)
    (src/'part=2'/'a-broken').symlink_to(tmp_path/'nowhere')   # sorts into the third batch of 50
    repo = Lake(tmp_path/'lake').create_repository('imports')
    with pytest.raises(MlinfraError, match=r"cannot read .*a-broken: No such file"): repo.import_directory('main', src, batch=50, processes=processes)
    assert len(repo.uncommitted('main')) == 100      # two whole batches, nothing of the third

def test_a_packing_process_that_dies_is_an_error_and_gc_removes_what_it_left(tmp_path, monkeypatch):
    src = tmp_path/'src'; make_folder(src)
    lake = Lake(tmp_path/'lake'); repo = lake.create_repository('imports')
    start = Packer.__init__
    def dies_at_once(self, *a, **kw): start(self, *a, **kw); os.kill(self.proc.pid, signal.SIGKILL)
    monkeypatch.setattr(Packer, '__init__', dies_at_once)
    with pytest.raises(MlinfraError, match=r'the packing process stopped \(exit code -9\)'): repo.import_directory('main', src, batch=50, processes=2)
    assert repo.uncommitted('main') == []
    lake.gc(grace=0)
    assert {f'packs/{p.name}' for p in (lake.root/'packs').iterdir()} <= referenced_files(lake)

def test_protected_branch_refuses_before_anything_is_packed(tmp_path):
    src = tmp_path/'src'; make_folder(src, 10)
    lake = Lake(tmp_path/'lake'); repo = lake.create_repository('imports')
    repo.protect('main')
    with pytest.raises(MlinfraError, match='protected'): repo.import_directory('main', src, processes=2)
    assert list((lake.root/'packs').iterdir()) == []

KILLED = textwrap.dedent('''
    import sys
    from mlinfra_nb.lake.core import Lake
    repo = Lake(sys.argv[1]).repository('imports')
    print('importing', flush=True)
    repo.import_directory('main', sys.argv[2], batch=200, processes=2)
''')

def test_kill9_mid_import_keeps_committed_data(tmp_path):
    src = tmp_path/'src'
    for i in range(6000): (src/f'd{i % 10}').mkdir(parents=True, exist_ok=True); (src/f'd{i % 10}'/f'{i}.bin').write_bytes(os.urandom(700))
    lake = Lake(tmp_path/'lake'); repo = lake.create_repository('imports')
    repo.put('main', 'kept.txt', b'committed before'); head = repo.commit('main', 'before').id
    lake.store.close()
    child = subprocess.Popen([sys.executable, '-c', KILLED, str(lake.root), str(src)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == 'importing'
    time.sleep(1.0); os.kill(child.pid, signal.SIGKILL); child.wait()
    again = Lake(tmp_path/'lake'); repo = again.repository('imports')
    assert repo.head('main').id == head and repo.get('main', 'kept.txt') == b'committed before'
    staged = repo.uncommitted('main')
    assert len(staged) % 200 == 0                       # whole batches only
    time.sleep(0.5)   # the packing process, its caller gone, has stopped writing by now
    again.gc(grace=0)
    assert {f'packs/{p.name}' for p in (again.root/'packs').iterdir()} <= referenced_files(again)
    for c in staged[:20]: assert repo.get('main', c.path) == (src/c.path).read_bytes()
