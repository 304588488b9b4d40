"""Defects of the lake server's authentication, each fixed and held by a test: a key revoked in another process stopped working only
after a minute; an unknown key id was refused faster than a wrong secret for a real one; wrong secrets were unlimited."""
import base64, statistics, subprocess, sys, threading, time
import httpx, pytest
from mlinfra_nb.lake import Lake, auth
from mlinfra_nb.lake.server import LakeServer

API = '/api/v1'

def basic(key:str, secret:str)->dict: return {'Authorization': 'Basic ' + base64.b64encode(f'{key}:{secret}'.encode()).decode()}


@pytest.fixture
def served(tmp_path):
    lake = Lake(tmp_path/'lake', user='owner')
    lake.create_repository('demo')
    key = auth.create_credentials(lake, 'alice')
    with LakeServer(lake) as srv: yield lake, srv, key
    lake.store.close()


def test_a_key_revoked_by_another_process_fails_on_its_next_request(served, mlinfra, clean_env, tmp_path):
    lake, srv, key = served
    with httpx.Client(base_url=srv.endpoint + API, headers=basic(key.access_key_id, key.secret_access_key)) as c:
        assert c.get('/user').status_code == 200 and c.get('/user').status_code == 200   # the second from the server's memory
        r = subprocess.run([mlinfra, 'lake', 'credentials', 'delete', key.access_key_id, '--root', str(lake.root)],
                           env=clean_env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert c.get('/user').status_code == 401


def test_a_user_removed_from_a_group_loses_its_rights_at_once(served):
    lake, srv, key = served
    auth.create_user(lake, 'bob', groups=['Developers'])
    bob = auth.create_credentials(lake, 'bob')
    with httpx.Client(base_url=srv.endpoint + API, headers=basic(bob.access_key_id, bob.secret_access_key)) as c:
        assert c.post('/repositories/demo/branches', json={'name': 'b1', 'source': 'main'}).status_code == 201
        auth.remove_member(Lake(lake.root), 'Developers', 'bob')     # another handle on the lake, as another process would have
        r = c.post('/repositories/demo/branches', json={'name': 'b2', 'source': 'main'})
        assert r.status_code == 401 and r.json()['message'] == 'insufficient permissions: not allowed to fs:CreateBranch'
    assert 'b2' not in lake.repository('demo').branches()


def test_unknown_key_ids_take_as_long_as_wrong_secrets(served):
    lake, srv, key = served
    def refused(headers)->float:
        with httpx.Client(base_url=srv.endpoint + API) as c:
            t = time.perf_counter(); r = c.get('/user', headers=headers); took = time.perf_counter() - t
        assert r.status_code == 401
        return took
    known, unknown = [], []
    for i in range(4):   # alternated, each guess from a key id of its own so the limiter stays out of it
        known.append(refused(basic(key.access_key_id, f'wrong-{i}')))
        unknown.append(refused(basic(f'AKIAJNOSUCHKEY{i:06d}', 'x')))
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2, (known, unknown)


def test_wrong_secrets_are_limited_before_they_cost_a_hash(served, monkeypatch):
    lake, srv, key = served
    hashed = []
    real = auth._hash_secret
    monkeypatch.setattr(auth, '_hash_secret', lambda secret, salt: hashed.append(1) or real(secret, salt))
    with httpx.Client(base_url=srv.endpoint + API) as c:
        assert c.get('/user', headers=basic(key.access_key_id, key.secret_access_key)).status_code == 200   # alice, remembered
        hashed.clear()
        answers = []
        def guess(i): answers.append(c.get('/user', headers=basic(key.access_key_id, f'guess-{i}')))
        threads = [threading.Thread(target=guess, args=(i,)) for i in range(120)]
        for t in threads: t.start()
        ok = c.get('/user', headers=basic(key.access_key_id, key.secret_access_key))   # alice meanwhile, from the same client
        for t in threads: t.join()
        assert ok.status_code == 200
        codes = [r.status_code for r in answers]
        assert set(codes) == {401, 429} and codes.count(401) == 5, codes   # 5 a minute per key and client, however many arrive at once
        assert len(hashed) == codes.count(401)                                 # a refused guess cost no hash
        limited = next(r for r in answers if r.status_code == 429)
        assert 0 < int(limited.headers['Retry-After']) <= 60 and 'too many wrong secrets' in limited.json()['message']
        other = c.get('/user', headers=basic('AKIAJSOMEOTHERKEY000', 'x'))   # another key id from this client: limited per client too, later
        assert other.status_code in (401, 429)


def test_keys_made_before_access_control_stay_admin(tmp_path):
    "A lake whose keys were made before there were users, groups and policies: their users become Admins, and nothing stops working."
    lake = Lake(tmp_path/'lake', user='owner')
    lake.create_repository('old')
    with lake.store.transaction() as con:   # the catalog as the earlier server left it: a credentials table and nothing else
        con.execute("CREATE TABLE credentials(access_key_id VARCHAR PRIMARY KEY, salt VARCHAR, secret_hash VARCHAR, user_id VARCHAR, created_at TIMESTAMPTZ)")
        salt = '00' * 16
        con.execute("INSERT INTO credentials VALUES ('AKIAJOLDKEY000000001', ?, ?, 'veteran', now())", [salt, auth._hash_secret('old-secret', salt)])
    assert auth.user_groups(lake, 'veteran') == ['Admins']
    with LakeServer(lake) as srv, httpx.Client(base_url=srv.endpoint + API, headers=basic('AKIAJOLDKEY000000001', 'old-secret')) as c:
        assert c.post('/repositories/old/branches', json={'name': 'still-works', 'source': 'main'}).status_code == 201
        assert c.get('/auth/users').json()['results'][0]['id'] == 'veteran'
    newcomer = auth.create_credentials(lake, 'newcomer')   # later users are not Admins: the lake has users already
    assert auth.user_groups(lake, newcomer.user) == []
    lake.store.close()


def test_a_principal_shared_by_threads_decides_from_its_first_use(tmp_path):
    "A server's requests share one principal per user: many at once on a fresh one all get an answer (a race once answered with a crash)."
    from concurrent.futures import ThreadPoolExecutor
    lake = Lake(tmp_path/'lake', user='owner')
    auth.create_user(lake, 'dev', groups=['Developers'])
    for _ in range(20):
        p = auth.Principal(lake, 'dev')
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: p.reason('fs:WriteObject' if i % 2 else 'auth:CreateUser', '*'), range(64)))
        assert answers[1::2] == [None] * 32 and set(answers[0::2]) == {'insufficient permissions: not allowed to auth:CreateUser'}
    lake.store.close()

def test_deleting_a_user_deletes_the_sealed_secrets_of_its_keys(tmp_path):
    "A deleted user's keys go, and so do their sealed secrets: nothing of them is left to leak from the catalog."
    lake = Lake(tmp_path/'lake', user='admin')
    auth.create_user(lake, 'eve', groups=['Viewers'])
    key = auth.create_credentials(lake, 'eve')
    with lake.store.connect() as con:
        assert con.execute("SELECT count(*) FROM credential_secrets WHERE access_key_id = ?", [key.access_key_id]).fetchone()[0] == 1
    auth.delete_user(lake, 'eve')
    with lake.store.connect() as con:
        assert con.execute("SELECT count(*) FROM credential_secrets WHERE access_key_id = ?", [key.access_key_id]).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM credentials WHERE user_id = 'eve'").fetchone()[0] == 0
    lake.store.close()
