"""Encryption at rest: an encrypted lake keeps no plain byte of its data on disk, reads back what was written, finds any change to
a stored object, and says so plainly when its key is missing or wrong."""
import os, subprocess
import httpx, pandas as pd, pytest
from mlinfra_nb.lake import Lake, auth
from mlinfra_nb.lake.server import LakeServer
from mlinfra_nb.lake.store import PACK_BELOW, generate_key
from mlinfra_nb.workspace import Corrupted, InvalidInput, Workspace

SECRET = b'4111-1111-1111-1111 belongs to Ada Lovelace'

def on_disk(root)->bytes:
    "Every byte of the lake's object files (the catalog, which holds paths and commit messages, is not encrypted)."
    return b''.join(p.read_bytes() for p in root.rglob('*') if p.is_file() and not p.name.startswith('catalog'))

def cards(n:int=2000)->pd.DataFrame:
    return pd.DataFrame({'card': [f'4111-{i:04d}' for i in range(n)], 'holder': [f'holder number {i}' for i in range(n)], 'amount': range(n)})


@pytest.fixture
def key_file(tmp_path, mlinfra, clean_env):
    "A key made by `mlinfra lake keygen`."
    path = tmp_path/'lake.key'
    r = subprocess.run([mlinfra, 'lake', 'keygen', '--out', str(path)], env=clean_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and oct(path.stat().st_mode & 0o777) == '0o600', r.stderr
    return path


def test_no_plain_data_on_disk_and_everything_reads_back(tmp_path, key_file):
    ws = Workspace(tmp_path/'ws', env={'MLINFRA_LAKE__KEY_FILE': str(key_file)})
    lake = Lake(workspace=ws)
    repo = lake.create_repository('pay')
    repo.put('main', 'raw/one.txt', SECRET)                                                              # a standalone object
    repo.put_many('main', {f'raw/{i}.txt': SECRET + b' #%d' % i for i in range(20)})                     # packed together
    repo.put('main', 'raw/big.bin', SECRET * (PACK_BELOW // len(SECRET) + 1))
    repo.write_table('main', 'tables/cards', cards())
    repo.commit('main', 'cards')
    raw = on_disk(lake.root)
    for plain in (SECRET, b'4111-0007', b'holder number 17', b'PAR1'):   # PAR1: not even Parquet's magic is left in the clear
        assert plain not in raw, plain
    assert repo.get('main', 'raw/one.txt') == SECRET and repo.get('main', 'raw/7.txt') == SECRET + b' #7'
    t = repo.table('main', 'tables/cards').df()
    assert len(t) == 2000 and t.amount.sum() == sum(range(2000))
    assert lake.sql("SELECT count(*) FROM 'lakefs://pay/main/tables/cards' WHERE holder LIKE '%17'").fetchall() == [(20,)]
    repo.write_table('main', 'tables/cards', cards(10), mode='append')                                   # encrypted parts append as usual
    assert repo.table_info('main', 'tables/cards').rows == 2010 and len(repo.table('main', 'tables/cards').df()) == 2010
    assert list((lake.root/'tmp').iterdir()) == []                                                      # no plain Parquet left behind
    lake.store.close()


def test_a_changed_object_is_found_never_read(tmp_path):
    key = generate_key()
    lake = Lake(tmp_path/'lake', key=key)
    repo = lake.create_repository('pay')
    repo.put('main', 'a.txt', SECRET); repo.put_many('main', {'b.txt': SECRET + b'b', 'c.txt': SECRET + b'c'})
    repo.write_table('main', 't', cards(50)); repo.commit('main', 'data')
    with lake.store.connect() as con:
        targets = [lake.store.locate(con, repo.stat('main', p).address) for p in ('a.txt', 'c.txt')]
        targets.append(lake.store.locate(con, repo.table_info('main', 't').parts[0].address))
    for path, off, size in targets:   # one bit in the middle of each stored object
        raw = bytearray(path.read_bytes()); raw[off + size // 2] ^= 0x01; path.write_bytes(bytes(raw))
    for p in ('a.txt', 'c.txt'):
        with pytest.raises(Corrupted, match=f'object pay/main/{p} failed its integrity check'): repo.get('main', p)
    assert repo.get('main', 'b.txt') == SECRET + b'b'          # its neighbour in the pack is unharmed
    with pytest.raises(Corrupted, match='failed its integrity check'): repo.table('main', 't')
    lake.store.close()


def test_missing_or_wrong_key_is_one_clear_error(tmp_path, mlinfra, clean_env):
    key = generate_key()
    lake = Lake(tmp_path/'lake', key=key); lake.create_repository('pay').put('main', 'a.txt', SECRET); lake.store.close()
    with pytest.raises(InvalidInput, match='is encrypted: give its key'): Lake(tmp_path/'lake')
    with pytest.raises(InvalidInput, match='wrong key for the lake'): Lake(tmp_path/'lake', key=generate_key())
    with pytest.raises(InvalidInput, match='a lake key is 32 bytes'): Lake(tmp_path/'lake', key='not a key')
    with pytest.raises(InvalidInput, match='not both'): Lake(tmp_path/'lake', workspace=Workspace(tmp_path/'ws', env={
        'MLINFRA_LAKE__KEY': key, 'MLINFRA_LAKE__KEY_FILE': str(tmp_path/'k')}))
    r = subprocess.run([mlinfra, 'lake', 'users', 'list', '--root', str(tmp_path/'lake')], env=clean_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.strip().count('\n') == 0 and 'is encrypted: give its key' in r.stderr, r.stderr
    r = subprocess.run([mlinfra, 'lake', 'users', 'list', '--root', str(tmp_path/'lake')], env={**clean_env, 'MLINFRA_LAKE__KEY': key},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert Lake(tmp_path/'lake', key=key).repository('pay').get('main', 'a.txt') == SECRET


def test_turning_encryption_on_keeps_what_was_stored(tmp_path):
    plain = Lake(tmp_path/'lake'); repo = plain.create_repository('pay')
    repo.put('main', 'old.txt', b'stored before encryption'); repo.write_table('main', 't', cards(20)); repo.commit('main', 'old')
    plain.store.close()
    key = generate_key()
    lake = Lake(tmp_path/'lake', key=key); repo = lake.repository('pay')
    repo.put('main', 'new.txt', SECRET); repo.write_table('main', 't', cards(5), mode='append'); repo.commit('main', 'new')
    assert repo.get('main', 'old.txt') == b'stored before encryption' and repo.get('main', 'new.txt') == SECRET
    assert len(repo.table('main', 't').df()) == 25
    assert SECRET not in on_disk(lake.root) and b'stored before encryption' in on_disk(lake.root)
    lake.store.close()
    with pytest.raises(InvalidInput, match='is encrypted'): Lake(tmp_path/'lake')


def test_the_server_serves_an_encrypted_lake(tmp_path):
    lake = Lake(tmp_path/'lake', key=generate_key())
    lake.create_repository('pay').put('main', 'a.txt', SECRET); lake.repository('pay').commit('main', 'a')
    key = auth.create_credentials(lake, 'ada')
    with LakeServer(lake) as srv, httpx.Client(base_url=srv.endpoint + '/api/v1', auth=(key.access_key_id, key.secret_access_key)) as c:
        url = '/repositories/pay/refs/main/objects'
        assert c.get(url, params={'path': 'a.txt'}).content == SECRET
        for _ in range(2):   # the first ranged read and a later one (the server reads a checked object's range directly when it can)
            r = c.get(url, params={'path': 'a.txt'}, headers={'Range': 'bytes=5-8'})
            assert (r.status_code, r.content) == (206, SECRET[5:9])
    lake.store.close()
