"""Bad input to the lake server: every malformed, unknown, unauthorised, forbidden, oversized or truncated request gets a
lakeFS-shaped error (a JSON body `{"message": ...}` naming the problem) with the status lakeFS uses, never a 500, and leaves
the lake as it was."""
import base64, http.client, itertools, json, random, re, socket, string, time
from contextlib import contextmanager
from urllib.parse import quote
import httpx, pytest
from mlinfra_nb.lake import Lake
from mlinfra_nb.lake.server import ROUTES, LakeServer, create_credentials

API = '/api/v1'
AUTH_MSG = re.escape('error authenticating request: missing or wrong access key id / secret')
DATA = b'0123456789'                 # data/a.csv on main of the shared repository 'demo'
MAX_UPLOAD = 200_000                 # the shared server's limit: above the truncated upload's 100,000 declared bytes


class ServerBug(AssertionError):
    "The server answered 500 (an unhandled exception) or broke the connection: a bug in the server, not a bad request."


# --- helpers ----------------------------------------------------------------------------------------

def failed(r, status:int, msg:str|None=None)->str:
    "Check that `r` (an httpx response) is a lakeFS-shaped error: `status`, JSON `{'message': ...}` matching the regex `msg`."
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers.get('content-type') == 'application/json', (r.headers.get('content-type'), r.text[:500])
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get('message'), str) and body['message'], body
    if msg is not None: assert re.search(msg, body['message']), body['message']
    return body['message']

def state(lake:Lake)->tuple:
    "Everything a refused request must leave as it was: repositories, refs, staging, protection rules and the blob files on disk."
    with lake.session():
        repos = {}
        for name in lake.repositories():
            r = lake.repository(name)
            branches = r.branches(show_hidden=True)   # hidden transaction branches too
            repos[name] = (branches, r.tags(), {b: r.uncommitted(b) for b in branches}, r.protection_rules())
    files = sorted(str(p.relative_to(lake.root)) for d in ('objects', 'packs') for p in (lake.root/d).rglob('*') if p.is_file())
    return repos, files

@contextmanager
def unchanged(lake:Lake):
    "Check that the requests made inside the block leave the lake as it was."
    before = state(lake)
    yield
    assert state(lake) == before, 'a refused request changed the lake'

def no_staging(lake:Lake):
    "Check that no branch of any repository has uncommitted changes."
    with lake.session():
        for name in lake.repositories():
            r = lake.repository(name)
            for b in r.branches(show_hidden=True): assert r.uncommitted(b) == [], (name, b, r.uncommitted(b))

def basic(key:str, secret:str)->bytes: return b'Basic ' + base64.b64encode(f'{key}:{secret}'.encode())

def raw(srv:LakeServer, method:str, target:str, headers=(), body:bytes=b'', length:int|None=None, timeout:float=15):
    """Send one HTTP/1.1 request exactly as given (no client-side checks or re-encoding) on a fresh connection.
    `headers` are (name, value) pairs of str or bytes; a Content-Length is added for a body (or `length` if given).
    Returns (status, lower-case headers, body)."""
    enc = lambda v: v if isinstance(v, bytes) else v.encode('latin-1')
    hs = [(b'Host', b'127.0.0.1'), (b'Connection', b'close')] + [(enc(k), enc(v)) for k, v in headers]
    if body or length is not None or method in ('POST', 'PUT'): hs.append((b'Content-Length', str(len(body) if length is None else length).encode()))
    head = enc(method) + b' ' + enc(target) + b' HTTP/1.1\r\n' + b''.join(k + b': ' + v + b'\r\n' for k, v in hs) + b'\r\n'
    with socket.create_connection(('127.0.0.1', srv.port), timeout=timeout) as s:
        s.sendall(head + body)
        resp = http.client.HTTPResponse(s, method=method)
        resp.begin()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()

def raw_failed(res, status:int, msg:str|None=None)->str:
    "`failed` for the result of `raw`."
    st, hs, body = res
    assert st == status, (st, body[:500])
    assert hs.get('content-type') == 'application/json', (hs, body[:500])
    m = json.loads(body)['message']
    if msg is not None: assert re.search(msg, m), m
    return m


# --- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def env(tmp_path_factory):
    "A lake with a populated repository 'demo', credentials for 'alice', and a server for it (upload limit MAX_UPLOAD)."
    lake = Lake(tmp_path_factory.mktemp('server-bad')/'lake', user='t')
    r = lake.create_repository('demo')
    r.put_many('main', {'data/a.csv': DATA, 'README': b'hello'}); r.commit('main', 'first')
    r.put('main', 'data/b.csv', b'b\n'); r.commit('main', 'second')
    r.tag('v1', 'main'); r.create_branch('dev', 'main')
    cred = create_credentials(lake, 'alice')
    with LakeServer(lake, max_upload=MAX_UPLOAD, guesses=(10_000, 10_000)) as srv:   # this module sends wrong secrets on purpose, many times
        with httpx.Client(base_url=srv.endpoint + API, auth=(cred.access_key_id, cred.secret_access_key), timeout=30) as c:
            yield lake, srv, cred, c
    lake.store.close()

@pytest.fixture
def api(env):
    "An authenticated httpx client for the shared server."
    return env[3]

_fresh = itertools.count(1)

@pytest.fixture
def fresh(env):
    "A repository of its own (main with one committed object) on the shared lake, for tests that change something."
    lake = env[0]
    r = lake.create_repository(f'fresh-{next(_fresh)}')
    r.put('main', 'keep.txt', b'keep'); r.commit('main', 'keep')
    return r


# --- malformed JSON bodies ----------------------------------------------------------------------------

@pytest.mark.parametrize('body, msg', [
    (b'{not json', r'^malformed JSON body: Expecting property name enclosed in double quotes: line 1 column 2'),
    (b'{"name": "x", "source": "main"', r'^malformed JSON body: Expecting'),                       # truncated
    (b'\xff\xfe{}', r'^malformed JSON body: '),                                                     # not UTF-8
    (b'1' + b'0' * 5000, r'^malformed JSON body: .*4300 digits'),                                   # a number Python refuses
    (b'[1, 2]', r'^invalid BranchCreation body: __root__: BranchCreation expected dict not list$'),
    (b'"main"', r'^invalid BranchCreation body: __root__: BranchCreation expected dict not str$'),
    (b'1e999', r'^invalid BranchCreation body: __root__: BranchCreation expected dict not float$'),
    (b'{"name": 3, "source": "main"}', r'^invalid BranchCreation body: name: str type expected$'),
    (b'{"name": "x", "source": ["main"]}', r'^invalid BranchCreation body: source: str type expected$'),
    (b'{"name": "x"}', r'^invalid BranchCreation body: source: field required$'),
    (b'{}', r'^invalid BranchCreation body: name: field required; source: field required$'),
    (b'', r'^this request needs a JSON body$'), (b'  \n', r'^this request needs a JSON body$'),
    (b'null', r'^this request needs a JSON body$'),
], ids=lambda x: x[:20].decode('latin-1') if isinstance(x, bytes) else None)
def test_malformed_json_body(env, api, body, msg):
    with unchanged(env[0]):
        failed(api.post('/repositories/demo/branches', content=body, headers={'content-type': 'application/json'}), 400, msg)

JSON_ROUTES = [('POST', '/repositories', 'RepositoryCreation'), ('POST', '/repositories/demo/tags', 'TagCreation'),
               ('POST', '/repositories/demo/branches/dev/commits', 'CommitCreation'), ('POST', '/repositories/demo/refs/dev/merge/main', 'Merge'),
               ('POST', '/repositories/demo/branches/dev/revert', 'RevertCreation'), ('PUT', '/repositories/demo/branches/dev', 'ResetCreation'),
               ('POST', '/repositories/demo/branches/dev/objects/delete', 'PathList')]

@pytest.mark.parametrize('method, path, model', JSON_ROUTES, ids=[m for *_, m in JSON_ROUTES])
def test_malformed_json_on_every_json_route(env, api, method, path, model):
    with unchanged(env[0]):
        failed(api.request(method, path, content=b'{not json'), 400, r'^malformed JSON body: Expecting property name')
        failed(api.request(method, path, json=[1]), 400, rf'^invalid {model} body: __root__: {model} expected dict not list$')
        failed(api.request(method, path, json={'message': 3, 'metadata': [1], 'paths': 'x', 'type': 1, 'ref': 1, 'id': 1, 'name': 1}), 400,
               rf'^invalid {model} body: \w+')

@pytest.mark.parametrize('method, path, body, msg', [
    ('POST', '/repositories', {'name': 'abc'}, r'^invalid RepositoryCreation body: storage_namespace: field required$'),
    ('POST', '/repositories', {'name': 'abc', 'storage_namespace': 's3://bucket'}, r"storage namespace 's3://bucket' is not supported"),
    ('POST', '/repositories/demo/tags', {'id': 't'}, r'^invalid TagCreation body: ref: field required$'),
    ('POST', '/repositories/demo/branches/dev/commits', {'message': 'm', 'metadata': {'a': 1}}, r'^invalid CommitCreation body: metadata.a: str type expected$'),
    ('POST', '/repositories/demo/branches/dev/commits', {'message': ''}, r'^a commit needs a non-empty message$'),
    ('POST', '/repositories/demo/branches/dev/revert', {'ref': 'main'}, r'^invalid RevertCreation body: parent_number: field required$'),
    ('PUT', '/repositories/demo/branches/dev', {'type': 'everything'}, r'^invalid ResetCreation body: type: must be one of enum values'),
    ('POST', '/repositories/demo/branches/dev/objects/delete', {'paths': 'README'}, r'^invalid PathList body: paths: value is not a valid list$'),
    ('POST', '/repositories/demo/refs/dev/merge/main', {'strategy': 'ours'}, r"^unknown merge strategy 'ours'"),
    ('POST', '/repositories/demo/refs/dev/merge/main', {'squash_merge': True}, r'^squash_merge is not supported'),
    ('PUT', '/repositories/demo/settings/branch_protection', {'pattern': 'main'}, r'^branch protection rules must be a JSON list'),
    ('PUT', '/repositories/demo/settings/branch_protection', [{'pattern': ''}], r'^invalid BranchProtectionRule body: pattern: ensure this value has at least 1'),
    ('PUT', '/repositories/demo/settings/branch_protection', [{'name': 'main'}], r'^invalid BranchProtectionRule body: pattern: field required$'),
])
def test_wrong_fields(env, api, method, path, body, msg):
    with unchanged(env[0]): failed(api.request(method, path, json=body), 400, msg)

def test_json_body_over_limit(env, api):
    with unchanged(env[0]):
        failed(api.post('/repositories/demo/branches', content=b' ' * (2**20 + 1)), 413,
               r'^request body of 1048577 bytes is over the limit of 1048576 bytes$')

@pytest.mark.parametrize('body', [b'[' * 100_000, b'{"a":' * 50_000 + b'1' + b'}' * 50_000], ids=['list', 'object'])
def test_deeply_nested_json(env, api, body):
    with unchanged(env[0]): failed(api.post('/repositories/demo/branches', content=body), 400, r'JSON')


# --- unknown repositories, refs and objects -----------------------------------------------------------

@pytest.mark.parametrize('method, path', [
    ('GET', '/repositories/nope'), ('GET', '/repositories/nope/metadata'), ('GET', '/repositories/nope/branches'),
    ('GET', '/repositories/nope/branches/main'), ('GET', '/repositories/nope/tags'), ('GET', '/repositories/nope/refs/main/commits'),
    ('GET', '/repositories/nope/refs/main/objects/ls'), ('GET', '/repositories/nope/refs/main/objects?path=README'),
    ('GET', '/repositories/nope/settings/branch_protection'), ('POST', '/repositories/nope/branches/main/objects?path=x'),
])
def test_unknown_repository(env, api, method, path):
    with unchanged(env[0]):
        failed(api.request(method, path, content=b'1' if method == 'POST' else None), 404, r"^repository not found: no repository 'nope'")
        if method == 'GET': failed(api.delete('/repositories/nope'), 404, r"^repository not found: no repository 'nope'")

UNKNOWN_REF = r"^not found: no branch, tag or commit '{}' in repository 'demo'$"
NO_BRANCH = r"^branch not found: no branch '{}' in repository 'demo'$"

@pytest.mark.parametrize('method, path, body, msg', [
    ('GET', '/repositories/demo/branches/nope', None, NO_BRANCH.format('nope')),
    ('DELETE', '/repositories/demo/branches/nope', None, NO_BRANCH.format('nope')),
    ('GET', '/repositories/demo/branches/nope/diff', None, NO_BRANCH.format('nope')),
    ('PUT', '/repositories/demo/branches/nope', {'type': 'reset'}, NO_BRANCH.format('nope')),
    ('PUT', '/repositories/demo/branches/nope/hard_reset?ref=main', None, NO_BRANCH.format('nope')),
    ('PUT', '/repositories/demo/branches/dev/hard_reset?ref=nope', None, UNKNOWN_REF.format('nope')),
    ('POST', '/repositories/demo/branches/nope/commits', {'message': 'm'}, NO_BRANCH.format('nope')),
    ('POST', '/repositories/demo/branches/nope/objects?path=x', b'1', NO_BRANCH.format('nope')),
    ('POST', '/repositories/demo/branches/v1/objects?path=x', b'1', NO_BRANCH.format('v1')),        # a tag is not writable
    ('DELETE', '/repositories/demo/branches/nope/objects?path=README', None, NO_BRANCH.format('nope')),
    ('POST', '/repositories/demo/branches/nope/objects/delete', {'paths': ['README']}, NO_BRANCH.format('nope')),
    ('POST', '/repositories/demo/branches', {'name': 'x', 'source': 'nope'}, UNKNOWN_REF.format('nope')),
    ('GET', '/repositories/demo/tags/nope', None, r"^tag not found: no tag 'nope' in repository 'demo'$"),
    ('DELETE', '/repositories/demo/tags/nope', None, r"^tag not found: no tag 'nope' in repository 'demo'$"),
    ('POST', '/repositories/demo/tags', {'id': 't2', 'ref': 'nope'}, UNKNOWN_REF.format('nope')),
    ('GET', '/repositories/demo/commits/deadbeef00', None, UNKNOWN_REF.format('deadbeef00')),
    ('GET', '/repositories/demo/refs/nope/commits', None, UNKNOWN_REF.format('nope')),
    ('GET', '/repositories/demo/refs/nope/objects/ls', None, UNKNOWN_REF.format('nope')),
    ('GET', '/repositories/demo/refs/nope/objects?path=README', None, UNKNOWN_REF.format('nope')),
    ('GET', '/repositories/demo/refs/nope/objects/stat?path=README', None, UNKNOWN_REF.format('nope')),
    ('GET', '/repositories/demo/refs/main/diff/nope', None, UNKNOWN_REF.format('nope')),
    ('GET', '/repositories/demo/refs/nope/diff/main', None, UNKNOWN_REF.format('nope')),
    ('GET', '/repositories/demo/refs/dev/merge/nope', None, UNKNOWN_REF.format('nope')),
    ('POST', '/repositories/demo/refs/nope/merge/dev', {}, UNKNOWN_REF.format('nope')),
    ('POST', '/repositories/demo/refs/main/merge/nope', {}, NO_BRANCH.format('nope')),
    ('POST', '/repositories/demo/branches/dev/revert', {'ref': 'nope', 'parent_number': 0}, UNKNOWN_REF.format('nope')),
    ('GET', '/repositories/demo/refs/main~9/objects?path=README', None, r"^'main~9': commit [0-9a-f]{12} has no parent$"),
    ('GET', '/repositories/demo/refs/main^2/objects?path=README', None, r"^'main\^2': commit [0-9a-f]{12} has 1 parent\(s\), not 2$"),
])
def test_unknown_ref(env, api, method, path, body, msg):
    kw = {'content': body} if isinstance(body, bytes) else {'json': body} if body is not None else {}
    with unchanged(env[0]): failed(api.request(method, path, **kw), 404, msg)

@pytest.mark.parametrize('method, path, msg', [
    ('GET', '/repositories/demo/refs/main/objects?path=no/such', r"^not found: no object 'no/such' at 'main' in repository 'demo'$"),
    ('GET', '/repositories/demo/refs/main/objects/stat?path=no/such', r"^not found: no object 'no/such' at 'main' in repository 'demo'$"),
    ('GET', '/repositories/demo/refs/v1/objects?path=data', r"^not found: no object 'data' at 'v1' in repository 'demo'$"),   # a prefix is not an object
    ('DELETE', '/repositories/demo/branches/dev/objects?path=no/such', r"^not found: no object 'no/such' on branch 'dev' of 'demo'$"),
    ('HEAD', '/repositories/demo/refs/main/objects?path=no/such', None),
])
def test_unknown_object(env, api, method, path, msg):
    with unchanged(env[0]):
        r = api.request(method, path)
        if method == 'HEAD': assert r.status_code == 404 and r.content == b''
        else: failed(r, 404, msg)

def test_unknown_object_in_a_listing_is_not_an_error(env, api):
    r = api.get('/repositories/demo/refs/main/objects/ls', params={'prefix': 'no/such/'})
    assert r.status_code == 200 and r.json()['results'] == []


# --- invalid names and paths --------------------------------------------------------------------------

REF_MSG = r"^invalid {} name '{}': use letters, digits, '_' and '-', starting with a letter, digit or '_'$"

@pytest.mark.parametrize('method, path, body, msg', [
    ('POST', '/repositories', {'name': 'Bad_Name', 'storage_namespace': 'local://x'},
     r'^invalid RepositoryCreation body: name: must validate the regular expression'),
    ('POST', '/repositories', {'name': 'ab', 'storage_namespace': 'local://x'}, r'^invalid RepositoryCreation body: name: '),
    ('POST', '/repositories', {'name': 'good-name', 'storage_namespace': 'local://x', 'default_branch': 'a b'}, REF_MSG.format('branch', 'a b')),
    ('POST', '/repositories/demo/branches', {'name': 'a b', 'source': 'main'}, REF_MSG.format('branch', 'a b')),
    ('POST', '/repositories/demo/branches', {'name': 'a/b', 'source': 'main'}, REF_MSG.format('branch', 'a/b')),
    ('POST', '/repositories/demo/branches', {'name': '-x', 'source': 'main'}, REF_MSG.format('branch', '-x')),
    ('POST', '/repositories/demo/tags', {'id': 'a b', 'ref': 'main'}, r"^invalid tag name 'a b': no spaces"),
    ('POST', '/repositories/demo/tags', {'id': 'v1..2', 'ref': 'main'}, r"^invalid tag name 'v1..2': no spaces, '\.\.'"),
    ('POST', '/repositories/demo/branches', {'name': 'main', 'source': 'main'}, None),
])
def test_invalid_names(env, api, method, path, body, msg):
    with unchanged(env[0]):
        if msg is None: failed(api.request(method, path, json=body), 409, r"^branch already exists: a branch or tag named 'main' already exists in repository 'demo'$")
        else: failed(api.request(method, path, json=body), 400, msg)

SEGMENTS = "empty, '.' and '..' segments are not allowed"
BAD_PATHS = [('../x', SEGMENTS), ('a/../../x', SEGMENTS), ('a//b', SEGMENTS), ('a/./b', SEGMENTS), ('a/', SEGMENTS),
             ('/abs', 'absolute paths are not allowed; use a path relative to the repository'), ('a\x00b', 'it contains a NUL byte'),
             ('x' * 1025, 'longer than 1024 bytes')]

@pytest.mark.parametrize('path, msg', BAD_PATHS, ids=[repr(p)[:12] for p, _ in BAD_PATHS])
def test_invalid_object_path(env, api, path, msg):
    with unchanged(env[0]):
        for method, route, body in [('POST', '/repositories/demo/branches/dev/objects', b'data'), ('GET', '/repositories/demo/refs/main/objects', None),
                                    ('GET', '/repositories/demo/refs/main/objects/stat', None), ('DELETE', '/repositories/demo/branches/dev/objects', None)]:
            m = failed(api.request(method, route, params={'path': path}, content=body), 400, re.escape(msg))
            assert m.startswith('invalid path '), (method, route, m)
        r = api.head('/repositories/demo/refs/main/objects', params={'path': path})
        assert r.status_code == 400
        r = api.post('/repositories/demo/branches/dev/objects/delete', json={'paths': [path]})
        assert r.status_code == 200 and r.json()['errors'][0]['status_code'] == 400, r.text   # lakeFS reports these per path

# A JSON string may spell a lone UTF-16 surrogate ("\ud800"): Python parses it into a str that is not Unicode text, which nothing
# downstream (DuckDB, the JSON encoder, the disk) can store. Every such string, wherever it sits in a body, is a 400 naming the field.
LONE = '\ud800'
SURROGATE_BODIES = [
    ('POST', '/repositories', {'name': LONE, 'storage_namespace': 'local://x'}, 'name'),
    ('POST', '/repositories', {'name': 'okname', 'storage_namespace': 'local://' + LONE}, 'storage_namespace'),
    ('POST', '/repositories/demo/branches', {'name': 'b' + LONE, 'source': 'main'}, 'name'),
    ('POST', '/repositories/demo/branches', {'name': 'fine', 'source': 'main' + LONE}, 'source'),
    ('POST', '/repositories/demo/tags', {'id': 'v' + LONE, 'ref': 'main'}, 'id'),
    ('POST', '/repositories/demo/tags', {'id': 'v9', 'ref': LONE}, 'ref'),
    ('POST', '/repositories/demo/branches/dev/commits', {'message': 'fix ' + LONE}, 'message'),
    ('POST', '/repositories/demo/branches/dev/commits', {'message': 'm', 'metadata': {'k': LONE}}, 'metadata.k'),
    ('POST', '/repositories/demo/branches/dev/commits', {'message': 'm', 'metadata': {LONE: 'v'}}, 'a key of metadata'),
    ('POST', '/repositories/demo/refs/dev/merge/main', {'message': LONE}, 'message'),
    ('POST', '/repositories/demo/refs/dev/merge/main', {'metadata': {'k': 'v' + LONE}}, 'metadata.k'),
    ('POST', '/repositories/demo/branches/dev/revert', {'ref': LONE, 'parent_number': 1}, 'ref'),
    ('POST', '/repositories/demo/branches/dev/revert', {'ref': 'main', 'parent_number': 1, 'commit_overrides': {'message': LONE}},
     'commit_overrides.message'),
    ('PUT', '/repositories/demo/branches/dev', {'type': 'object', 'path': LONE}, 'path'),
    ('POST', '/repositories/demo/branches/dev/objects/delete', {'paths': ['README', 'x' + LONE]}, r'paths\[1\]'),
    ('POST', '/repositories/demo/branches/dev/objects/copy?dest_path=c', {'src_path': LONE, 'src_ref': 'main'}, 'src_path'),
    ('PUT', '/repositories/demo/settings/branch_protection', [{'pattern': 'rel-' + LONE}], r'\[0\]\.pattern'),
    ('POST', '/statistics', {'events': [{'class': LONE, 'name': 'x', 'count': 1}]}, r'events\[0\]\.class'),
]

@pytest.mark.parametrize('method, path, body, where', SURROGATE_BODIES, ids=[f'{p.split("/")[-1]}:{w}'.replace('\\', '') for _, p, _, w in SURROGATE_BODIES])
def test_lone_surrogate_in_json_string(env, api, method, path, body, where):
    raw_json = json.dumps(body).encode()          # ensure_ascii: the surrogate travels as the 6 characters \ud800
    assert b'\\ud800' in raw_json
    with unchanged(env[0]):
        failed(api.request(method, path, content=raw_json, headers={'content-type': 'application/json'}), 400,
               rf"^invalid JSON body: {where} holds the lone surrogate '\\ud800', which is not text; send valid Unicode \(UTF-8\) strings$")

def test_surrogate_pairs_are_text(env, api, fresh):
    "An escaped surrogate *pair* is one ordinary character (here an emoji), and goes through."
    base = f'/repositories/{fresh.name}'
    api.post(f'{base}/branches/main/objects', params={'path': 'e.txt'}, content=b'e')
    body = json.dumps({'message': 'smile \U0001F600', 'metadata': {'mood': '\U0001F600'}}).encode()
    assert b'\\ud83d\\ude00' in body
    r = api.post(f'{base}/branches/main/commits', content=body, headers={'content-type': 'application/json'})
    assert r.status_code == 201, r.text
    assert fresh.head('main').message == 'smile \U0001F600' and fresh.head('main').metadata == {'mood': '\U0001F600'}

@pytest.mark.parametrize('method, path', [
    ('GET', '/repositories/demo/refs/main/objects/stat?path=%ED%A0%80'), ('GET', '/repositories/demo/refs/%ED%A0%80/objects?path=README'),
    ('POST', '/repositories/demo/branches/%ED%A0%80/objects?path=a'), ('GET', '/repositories/demo/tags/%ED%A0%80'),
    ('GET', '/repositories/demo/refs/main/objects/ls?prefix=%ED%A0%80&after=%ED%A0%80'),
])
def test_surrogate_bytes_in_path_or_query(env, api, method, path):
    "Percent-encoded bytes that would spell a surrogate in UTF-8 are not UTF-8: they arrive as U+FFFD, never as a 500."
    with unchanged(env[0]):
        st, hs, body = raw(env[1], method, API + path, [('Authorization', basic(env[2].access_key_id, env[2].secret_access_key))],
                           b'1' if method == 'POST' else b'')
        assert st in (200, 400, 404), (st, body)
        if st != 200: assert '\ufffd' in json.loads(body)['message'], body


@pytest.mark.parametrize('params', [{}, {'path': ''}], ids=['absent', 'empty'])
def test_object_path_is_required(env, api, params):
    with unchanged(env[0]):
        for method, route in [('POST', '/repositories/demo/branches/dev/objects'), ('GET', '/repositories/demo/refs/main/objects'),
                              ('GET', '/repositories/demo/refs/main/objects/stat'), ('DELETE', '/repositories/demo/branches/dev/objects')]:
            failed(api.request(method, route, params=params, content=b'x' if method == 'POST' else None), 400,
                   r"^the 'path' query parameter is required$")

LISTINGS = ['/repositories', '/repositories/demo/branches', '/repositories/demo/refs/main/commits', '/repositories/demo/refs/main/objects/ls',
            '/repositories/demo/branches/main/diff']

def test_bad_amount(env, api):
    for path in LISTINGS: failed(api.get(path, params={'amount': 'x'}), 400, r"^amount must be an integer, got 'x'$")

@pytest.mark.parametrize('amount, per_page', [('-5', 100), ('0', 100), ('99999999999999999999', 1000), ('1001', 1000), ('3', 3)])
def test_amount_is_clamped_as_lakefs_does(env, api, amount, per_page):
    "lakeFS's paginationAmount: none or <= 0 means 100, over 1000 means 1000 (a listing never pages by 0)."
    for path in LISTINGS:
        r = api.get(path, params={'amount': amount})
        assert r.status_code == 200 and r.json()['pagination']['max_per_page'] == 1000
        assert len(r.json()['results']) <= per_page

def test_ref_with_huge_ancestor_number(env, api):
    with unchanged(env[0]):
        r = api.get('/repositories/demo/refs/main~' + '9' * 5000 + '/objects', params={'path': 'README'})
        failed(r, 404 if r.status_code == 404 else 400, r"ancestor number 9+\.\.\. is too large")


# --- credentials --------------------------------------------------------------------------------------

@pytest.mark.parametrize('auth', ['none', 'wrong-secret', 'unknown-key', 'empty-secret', 'bearer', 'not-base64', 'no-colon', 'not-utf8', 'basic-only'])
def test_wrong_or_missing_credentials(env, auth):
    lake, srv, cred, _ = env
    k = cred.access_key_id
    header = {'none': None, 'wrong-secret': basic(k, 'not-the-secret'), 'unknown-key': basic('AKIAJNOSUCHKEY000000', cred.secret_access_key),
              'empty-secret': basic(k, ''), 'bearer': b'Bearer ' + cred.secret_access_key.encode(), 'not-base64': b'Basic !!!not base64!!!',
              'no-colon': b'Basic ' + base64.b64encode(k.encode()), 'not-utf8': b'Basic ' + base64.b64encode(k.encode() + b':\xff\xfe'),
              'basic-only': b'Basic'}[auth]
    hs = [('Authorization', header)] if header is not None else []
    with unchanged(lake):
        for method, path in [('GET', '/repositories'), ('GET', '/repositories/demo/refs/main/objects?path=README'), ('GET', '/user'),
                             ('POST', '/repositories/demo/branches'), ('DELETE', '/repositories/demo'), ('GET', '/repositories/nope')]:
            raw_failed(raw(srv, method, API + path, hs, b'{"name": "x", "source": "main"}' if method == 'POST' else b''), 401, AUTH_MSG)
        st, _, body = raw(srv, 'GET', API + '/healthcheck', hs)          # the health check needs no credentials
        assert st == 204 and body == b''

def test_right_credentials_work(env, api):
    assert api.get('/user').json()['user']['id'] == 'alice'
    assert api.get('/repositories/demo/refs/main/objects', params={'path': 'data/a.csv'}).content == DATA

def test_non_ascii_credentials(env):
    lake, srv, *_ = env
    with unchanged(lake): raw_failed(raw(srv, 'GET', API + '/repositories', [('Authorization', b'Basic \xe9\xe9')]), 401, AUTH_MSG)


def test_auth_scheme_is_case_insensitive(env):
    lake, srv, cred, _ = env
    st, _, body = raw(srv, 'GET', API + '/user', [('Authorization', b'basic ' + basic(cred.access_key_id, cred.secret_access_key)[6:])])
    assert st == 200 and json.loads(body)['user']['id'] == 'alice', (st, body)


# --- protected branches -------------------------------------------------------------------------------

def test_protected_branch(env, api, fresh):
    lake, name = env[0], fresh.name
    base = f'/repositories/{name}'
    assert api.put(f'{base}/settings/branch_protection', json=[{'pattern': 'main'}]).status_code == 204
    assert api.get(f'{base}/settings/branch_protection').json() == [{'pattern': 'main'}]
    msg = r"^cannot (?:commit|write) to protected branch: cannot {} on branch 'main': it is protected by rule 'main'; work on another branch and merge$"   # lakeFS's text first
    with unchanged(lake):
        failed(api.post(f'{base}/branches/main/objects', params={'path': 'new.txt'}, content=b'direct'), 403, msg.format('write'))
        failed(api.post(f'{base}/branches/main/objects', params={'path': 'new.txt'}, files={'content': ('f', b'direct')}), 403, msg.format('write'))
        failed(api.post(f'{base}/branches/main/commits', json={'message': 'direct', 'allow_empty': True}), 403, msg.format('commit'))
        failed(api.delete(f'{base}/branches/main/objects', params={'path': 'keep.txt'}), 403, msg.format('delete objects'))
        r = api.post(f'{base}/branches/main/objects/delete', json={'paths': ['keep.txt']})
        assert r.status_code == 200 and r.json()['errors'][0]['status_code'] == 403, r.text
        failed(api.put(f'{base}/branches/main', json={'type': 'reset'}), 403, msg.format('reset'))
        failed(api.put(f'{base}/branches/main/hard_reset', params={'ref': 'main~1'}), 403, msg.format('hard-reset'))
    # merging into the protected branch is still allowed
    assert api.post(f'{base}/branches', json={'name': 'work', 'source': 'main'}).status_code == 201
    assert api.post(f'{base}/branches/work/objects', params={'path': 'new.txt'}, content=b'via merge').status_code == 201
    assert api.post(f'{base}/branches/work/commits', json={'message': 'work'}).status_code == 201
    r = api.post(f'{base}/refs/work/merge/main', json={'message': 'merge work'})
    assert r.status_code == 200, r.text
    assert fresh.head('main').id == r.json()['reference'] and fresh.get('main', 'new.txt') == b'via merge' and fresh.get('main', 'keep.txt') == b'keep'
    assert fresh.uncommitted('main') == []


# --- oversized and truncated uploads ------------------------------------------------------------------

def test_oversized_upload(tmp_path):
    lake = Lake(tmp_path/'lake', user='t')
    r = lake.create_repository('small'); r.put('main', 'keep.txt', b'keep'); r.commit('main', 'keep')
    cred = create_credentials(lake, 'alice')
    try:
        with LakeServer(lake, max_upload=1000) as srv, \
             httpx.Client(base_url=srv.endpoint + API, auth=(cred.access_key_id, cred.secret_access_key), timeout=30) as c:
            up, data, auth = '/repositories/small/branches/main/objects', bytes(range(256)) * 20, [('Authorization', basic(cred.access_key_id, cred.secret_access_key))]
            before = state(lake)
            failed(c.post(up, params={'path': 'big.bin'}, content=data[:5000]), 413, r'^request body of 5000 bytes is over the limit of 1000 bytes$')
            failed(c.post(up, params={'path': 'big.bin'}, content=iter([data[:600]] * 9)), 413,             # chunked: no Content-Length
                   r'^request body is over the limit of 1000 bytes$')
            failed(c.post(up, params={'path': 'big.bin'}, files={'content': ('big.bin', data[:5000])}), 413,   # multipart
                   r'^upload of 5000 bytes is over the limit of 1000 bytes$')
            raw_failed(raw(srv, 'POST', API + up + '?path=big.bin', auth, data[:10], length=10**12), 413,    # a Content-Length that lies
                       r'^request body of 1000000000000 bytes is over the limit of 1000 bytes$')
            raw_failed(raw(srv, 'POST', API + up + '?path=big.bin', auth, data[:5000]), 413, r'^request body of 5000 bytes is over the limit')
            diff = c.get('/repositories/small/branches/main/diff')
            assert diff.status_code == 200 and diff.json()['results'] == [], diff.text
            assert state(lake) == before, 'a refused upload changed the lake'
            no_staging(lake)
            assert not r.exists('main', 'big.bin')
            # the limit itself is allowed, and the server still works
            assert c.post(up, params={'path': 'fits.bin'}, content=data[:1000]).status_code == 201
            assert c.get('/repositories/small/refs/main/objects', params={'path': 'fits.bin'}).content == data[:1000]
    finally: lake.store.close()

@pytest.mark.parametrize('kind', ['raw', 'multipart'])
def test_streamed_upload_over_limit_is_not_read(tmp_path, kind):
    "A 200 MB upload without a Content-Length, against a 1 MiB limit: refused with 413 once the limit is passed, the rest never read."
    lake = Lake(tmp_path/'lake', user='t')
    lake.create_repository('small')
    cred = create_credentials(lake, 'alice')
    limit, total, sent = 2**20, 200 * 2**20, [0]
    def body():   # counts what the client managed to send: the server's reads, plus what the sockets' buffers hold
        if kind == 'multipart': yield b'--xyz\r\nContent-Disposition: form-data; name="content"; filename="big.bin"\r\n\r\n'
        chunk = b'\xab' * 65536
        for _ in range(total // len(chunk)):
            sent[0] += len(chunk); yield chunk
        if kind == 'multipart': yield b'\r\n--xyz--\r\n'
    ctype = 'multipart/form-data; boundary=xyz' if kind == 'multipart' else 'application/octet-stream'
    try:
        with LakeServer(lake, max_upload=limit) as srv, \
             httpx.Client(base_url=srv.endpoint + API, auth=(cred.access_key_id, cred.secret_access_key), timeout=60) as c:
            before, t = state(lake), time.monotonic()
            r = c.post('/repositories/small/branches/main/objects', params={'path': 'big.bin'}, content=body(), headers={'content-type': ctype})
            failed(r, 413, rf"^{'multipart upload' if kind == 'multipart' else 'request body'} is over the limit of {limit} bytes$")
            assert r.headers.get('connection') == 'close'
            assert sent[0] < 32 * 2**20, f'the client got to send {sent[0]:,} of {total:,} bytes: the server read on past the limit'
            assert time.monotonic() - t < 20
            assert state(lake) == before and not list((lake.root/'tmp').iterdir())
            # an honest Content-Length over the limit is refused before any of the body is read
            auth = [('Authorization', basic(cred.access_key_id, cred.secret_access_key)), ('Content-Type', ctype)]
            raw_failed(raw(srv, 'POST', API + '/repositories/small/branches/main/objects?path=big.bin', auth, b'x' * 100, length=total), 413,
                       rf"^{'multipart upload' if kind == 'multipart' else 'request body'} of {total} bytes is over the limit of {limit} bytes$")
            # and the server goes on serving: an upload of exactly the limit is fine
            files = {'files': {'content': ('ok.bin', b'\xab' * limit)}} if kind == 'multipart' else {'content': b'\xab' * limit}
            assert c.post('/repositories/small/branches/main/objects', params={'path': 'ok.bin'}, **files).status_code == 201
            assert lake.repository('small').get('main', 'ok.bin') == b'\xab' * limit
    finally: lake.store.close()

def test_truncated_upload(env, api, fresh):
    lake, srv, cred, _ = env
    base = f'/repositories/{fresh.name}'
    before = state(lake)
    with socket.create_connection(('127.0.0.1', srv.port), timeout=10) as s:
        s.sendall(f'POST {API}{base}/branches/main/objects?path=trunc.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                  f'Authorization: {basic(cred.access_key_id, cred.secret_access_key).decode()}\r\n'
                  'Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n'.encode() + b'x' * 1000)
        time.sleep(0.2)                                   # let the server start reading the body, then hang up on it
    for _ in range(50):                                   # the server still answers ...
        r = httpx.get(srv.endpoint + API + '/healthcheck', timeout=10)
        if r.status_code == 204: break
        time.sleep(0.1)
    assert r.status_code == 204
    time.sleep(0.3)                                       # ... and, once it has seen the hang-up, nothing was staged for that path
    diff = api.get(f'{base}/branches/main/diff')
    assert diff.status_code == 200 and diff.json()['results'] == [], diff.text
    failed(api.get(f'{base}/refs/main/objects/stat', params={'path': 'trunc.bin'}), 404, r"^not found: no object 'trunc.bin' at 'main'")
    assert state(lake) == before, 'a truncated upload changed the lake'
    # the same path uploads fine afterwards, with all its bytes
    data = bytes(range(256)) * 400
    assert api.post(f'{base}/branches/main/objects', params={'path': 'trunc.bin'}, content=data).status_code == 201
    assert fresh.get('main', 'trunc.bin') == data

@pytest.mark.parametrize('ctype, body', [('multipart/form-data; boundary=xyz', b'garbage'), ('multipart/form-data', b'garbage'),
                                         ('multipart/form-data; boundary=xyz', b'--xyz\r\nContent-Disposition: form-data; name="content"; filename="a"\r\n\r\nab')],
                         ids=['bad-body', 'no-boundary', 'truncated'])
def test_malformed_multipart_upload(env, api, ctype, body):
    with unchanged(env[0]):
        failed(api.post('/repositories/demo/branches/dev/objects', params={'path': 'm.bin'}, content=body, headers={'content-type': ctype}), 400)

def test_multipart_without_content_field(env, api):
    with unchanged(env[0]):
        failed(api.post('/repositories/demo/branches/dev/objects', params={'path': 'm.bin'}, files={'other': ('a', b'1')}), 400,
               r"^multipart upload needs a 'content' file field$")
        failed(api.post('/repositories/demo/branches/dev/objects', params={'path': 'm.bin'}, data={'content': 'a string'}, files={'x': ('a', b'1')}), 400,
               r"^multipart upload needs a 'content' file field$")
        truncated = b'--xyz\r\nContent-Disposition: form-data; name="content"; filename="a"\r\n\r\nab'   # no closing boundary
        failed(api.post('/repositories/demo/branches/dev/objects', params={'path': 'm.bin'}, content=truncated,
                        headers={'content-type': 'multipart/form-data; boundary=xyz'}), 400, r"^multipart upload needs a 'content' file field$")


# --- where the server listens -------------------------------------------------------------------------

EVERY_INTERFACE = 'listens on every network interface, where other machines can connect; pass allow_remote=True (--allow-remote)'

@pytest.mark.parametrize('host, msg', [('', "no address to listen on ('')"), ('   ', 'no address to listen on'),
                                       ('0.0.0.0', f"'0.0.0.0' {EVERY_INTERFACE}"), ('::', f"'::' {EVERY_INTERFACE}"),
                                       ('[::]', f"'[::]' {EVERY_INTERFACE}"), ('0', f"'0' {EVERY_INTERFACE}")])
def test_server_refuses_unasked_for_addresses(env, host, msg):
    from mlinfra_nb.workspace import InvalidInput
    with pytest.raises(InvalidInput, match=re.escape(msg)): LakeServer(env[0], host=host)

def test_every_interface_when_asked(env):
    "With allow_remote, 0.0.0.0 serves (here reached through 127.0.0.1), and the endpoint names the port port 0 chose."
    with LakeServer(env[0], host='0.0.0.0', allow_remote=True) as srv:
        assert srv.port > 0 and srv.endpoint == f'http://0.0.0.0:{srv.port}'
        assert httpx.get(f'http://127.0.0.1:{srv.port}{API}/healthcheck', timeout=10).status_code == 204

def test_endpoint_is_known_before_serving(env):
    srv = LakeServer(env[0], port=0)
    try:
        assert srv.port > 0 and srv.endpoint == f'http://127.0.0.1:{srv.port}' and 'stopped' in repr(srv)
        with pytest.raises(Exception, match='Address already in use'): LakeServer(env[0], port=srv.port)   # it holds the port already
    finally: srv.stop()

def _serve_cli(mlinfra, env, cwd, *argv, wait=True):
    import subprocess
    p = subprocess.Popen([mlinfra, 'lake', 'serve', '--root', str(cwd/'lake'), *argv], env=env, cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait: return p
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err

@pytest.mark.parametrize('argv, msg', [(['--host', '', '--port', '0'], "no address to listen on ('')"),
                                       (['--host', '0.0.0.0', '--port', '0'], f"'0.0.0.0' {EVERY_INTERFACE}"),
                                       (['--host', '::', '--port', '0'], f"'::' {EVERY_INTERFACE}"), (['--port', '70000'], 'cannot listen on 127.0.0.1:70000')])
def test_cli_refuses_unasked_for_addresses(mlinfra, clean_env, tmp_path, argv, msg):
    "One line and exit status 1 (after the warning that the lake has no access keys yet)."
    Lake(tmp_path/'lake').store.close()
    rc, out, err = _serve_cli(mlinfra, clean_env, tmp_path, *argv)
    assert rc == 1 and out == '' and 'Traceback' not in err, (rc, out, err)
    assert err.splitlines()[-1].startswith(f"mlinfra: error: {msg}"), err

@pytest.mark.parametrize('argv, host', [([], '127.0.0.1'), (['--host', '0.0.0.0', '--allow-remote'], '0.0.0.0')])
def test_cli_prints_the_real_port(mlinfra, clean_env, tmp_path, argv, host):
    "`--port 0` prints the port the server got, and the server is there."
    lk = Lake(tmp_path/'lake'); cred = create_credentials(lk, 'alice'); lk.store.close()
    p = _serve_cli(mlinfra, clean_env, tmp_path, *argv, '--port', '0', wait=False)
    try:
        line = p.stdout.readline()
        m = re.fullmatch(rf"serving the lake at {re.escape(str(tmp_path/'lake'))} as lakeFS on http://{re.escape(host)}:(\d+) "
                         rf"\(S3 gateway: http://{re.escape(host)}:\1/<repository>/<ref>/<path>; Ctrl-C stops\)\n", line)
        assert m and int(m.group(1)) > 0, (line, p.stderr.read() if p.poll() is not None else '')
        for _ in range(100):
            try: r = httpx.get(f'http://127.0.0.1:{m.group(1)}{API}/repositories', auth=(cred.access_key_id, cred.secret_access_key), timeout=5); break
            except httpx.TransportError: time.sleep(0.1)
        assert r.status_code == 200 and r.json()['results'] == []
    finally: p.terminate(); p.wait(30)


# --- unknown routes and wrong methods -----------------------------------------------------------------

@pytest.mark.parametrize('path', ['/', '/api/v1', '/api/v1/nope', '/api/v2/repositories', '/api/v1/repositories/demo/nope',
                                  '/api/v1/repositories/demo/branches/main/nope', '/api/v1/repositories/demo/refs/main/objects/nope'])
def test_unknown_route(env, path):
    lake, srv, cred, _ = env
    raw_failed(raw(srv, 'GET', path, [('Authorization', basic(cred.access_key_id, cred.secret_access_key))]), 404, r'^Not Found$')
    raw_failed(raw(srv, 'GET', path), 404, r'^Not Found$')                            # routing comes before authentication

@pytest.mark.parametrize('method, path', [('DELETE', '/healthcheck'), ('PATCH', '/repositories'), ('PUT', '/repositories/demo/tags'),
                                          ('POST', '/repositories/demo/refs/main/objects'), ('DELETE', '/repositories/demo/commits/abc')])
def test_wrong_method(env, api, method, path):
    with unchanged(env[0]): failed(api.request(method, path), 405, r'^Method Not Allowed$')

def test_wrong_method_says_what_is_allowed(env, api):
    r = api.delete('/healthcheck')
    assert r.status_code == 405 and set(r.headers.get('allow', '').replace(' ', '').split(',')) == {'GET', 'HEAD'}


# --- range requests -----------------------------------------------------------------------------------

@pytest.mark.parametrize('header, start, end', [('bytes=2-5', 2, 5), ('bytes=0-0', 0, 0), ('bytes=7-', 7, 9), ('bytes=-3', 7, 9),
                                                ('bytes=8-100', 8, 9), ('bytes=-100', 0, 9), ('bytes=0-9', 0, 9)])
def test_range(api, header, start, end):
    r = api.get('/repositories/demo/refs/main/objects', params={'path': 'data/a.csv'}, headers={'Range': header})
    assert r.status_code == 206, r.text
    assert r.content == DATA[start:end + 1]
    assert r.headers['content-range'] == f'bytes {start}-{end}/{len(DATA)}'
    assert r.headers['content-length'] == str(end - start + 1)

@pytest.mark.parametrize('header', ['bytes=10-', 'bytes=20-30', 'bytes=5-2', 'bytes=-0', 'bytes=', 'bytes=-', 'items=0-1', 'bytes=a-b', 'bytes=99999999999999999999-'])
def test_unsatisfiable_range(api, header):
    r = api.get('/repositories/demo/refs/main/objects', params={'path': 'data/a.csv'}, headers={'Range': header})
    failed(r, 416, r'^Requested Range Not Satisfiable$')
    assert r.headers['content-range'] == f'bytes */{len(DATA)}'

def test_ranges_of_a_packed_object(env, api, fresh):
    "The first ranged read of an object checks its whole content; later ones read just the range, at the right offset."
    objs = {f'p/{i}.bin': bytes([i]) * 100 + bytes(range(256)) + bytes([i]) * 100 for i in range(3)}
    fresh.put_many('main', objs); fresh.commit('main', 'three small objects')
    for i in (1, 1, 2, 0):
        r = api.get(f'/repositories/{fresh.name}/refs/main/objects', params={'path': f'p/{i}.bin'}, headers={'Range': 'bytes=98-357'})
        assert r.status_code == 206 and r.content == objs[f'p/{i}.bin'][98:358] and r.headers['content-range'] == 'bytes 98-357/456'
        failed(api.get(f'/repositories/{fresh.name}/refs/main/objects', params={'path': f'p/{i}.bin'}, headers={'Range': 'bytes=456-'}), 416)

def test_range_on_missing_object(api):
    failed(api.get('/repositories/demo/refs/main/objects', params={'path': 'no/such'}, headers={'Range': 'bytes=0-1'}), 404, r"^not found: no object 'no/such'")

def test_range_with_huge_number(api):
    failed(api.get('/repositories/demo/refs/main/objects', params={'path': 'data/a.csv'}, headers={'Range': 'bytes=' + '9' * 5000 + '-'}), 416)


# --- fuzzing ------------------------------------------------------------------------------------------

FUZZ_FILES = {'data/a.csv': b'a,b\n1,2\n', 'data/sub/b.bin': bytes(range(256)), 'README.md': b'# fuzz\n', 'empty': b''}
UNICODE = ['näme', '😀', '日本語', 'Ω≈ç√', '\u202eevil', '\ufeffbom', 'a\u0000b', 'e\u0301', '\U0010ffff']
REF_JUNK = ['..', '.', '~', '^', '@', 'main@', 'main@@', 'main~', 'main^', 'main~-1', 'main^0', 'main~1~1', '-x', '_', 'a b', 'HEAD',
            'v1@', 'dev~999', 'deadbeef' * 8, 'main~' + '9' * 5000]
PCT_JUNK = ['%', '%zz', '%00', '%ff%fe', '%2F', '%2e%2e', '%2e', '%C3%28', '%E2%82', '%25', '%u0041', '%%%', '%0d%0a', '%20']
KEYS = ['name', 'source', 'id', 'ref', 'message', 'metadata', 'allow_empty', 'paths', 'type', 'path', 'pattern', 'storage_namespace',
        'default_branch', 'strategy', 'parent_number', 'squash_merge', 'force', 'commit_overrides', '']
VALUES = [None, 0, 3, -1, 1.5, True, 'x', '', 'main', 'dev', 'fuzz', 'local://x', 'reset', 'object', '../x', 'a//b', 'x' * 300, '\x00',
          'näme', [], {}, [1, 'a'], {'a': 1}, {'a': 'b'}, ['README.md'], 10**30, -10**30]
QUERY_KEYS = ['path', 'amount', 'after', 'prefix', 'delimiter', 'ref', 'type', 'objects', 'prefixes', 'limit', 'first_parent', 'presign']
QUERY_VALUES = ['', '-1', '0', '1', '1001', '99999999999999999999', '1e3', 'true', 'false', 'two_dot', 'three_dot', 'data/a.csv', 'data/',
                '/', '../x', '/abs', 'a//b', 'main', 'v1', 'x' * 1000]

def fuzz_segment(rng, real:list, junk:float=0.55)->str:
    "A path segment, already percent-encoded: one of the `real` names, or (with probability `junk`) junk."
    k = rng.random()
    if k >= junk: return quote(rng.choice(real), safe='')
    k /= junk
    if k < 0.2: return rng.choice(PCT_JUNK)
    if k < 0.4: return quote(rng.choice(UNICODE), safe='')
    if k < 0.55: return 'x' * rng.choice([3, 64, 257, 1025, 3000])
    if k < 0.8: return quote(rng.choice(REF_JUNK), safe='')
    if k < 0.9: return ''
    return quote(''.join(rng.choice(string.printable) for _ in range(rng.randint(1, 30))), safe='')

def fuzz_query(rng)->str:
    k = rng.random()
    if k < 0.15: return ''
    if k < 0.4: return '?path=' + (quote(rng.choice(list(FUZZ_FILES) + ['no/such', 'new/obj']), safe='/') if rng.random() < 0.7
                                   else fuzz_segment(rng, ['x'], junk=1))
    if k < 0.38: return '?' + rng.choice(['&&==&', '%', '=', '&', 'path', 'path=%ff', 'path=%00', 'amount=%00', '?='])
    parts = []
    for _ in range(rng.randint(1, 4)):
        key = rng.choice(QUERY_KEYS) if rng.random() < 0.85 else fuzz_segment(rng, ['x'])
        v = rng.random()
        val = (quote(rng.choice(QUERY_VALUES), safe='/') if v < 0.5 else rng.choice(PCT_JUNK) if v < 0.65
               else quote(rng.choice(UNICODE + REF_JUNK), safe='') if v < 0.85 else quote('/'.join(rng.choice(list(FUZZ_FILES))
                                                                                                  for _ in range(1)), safe='/'))
        parts.append(f'{key}={val}')
    return '?' + '&'.join(parts)

def fuzz_json(rng, depth:int=0):
    k = rng.random()
    if depth > 3 or k < 0.3: return rng.choice(VALUES)
    if k < 0.8: return {rng.choice(KEYS): fuzz_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    return [fuzz_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]

def fuzz_body(rng)->tuple[bytes, str|None]:
    "A body and its content type."
    k = rng.random()
    ctype = rng.choice([None, 'application/json', 'application/json', 'text/plain', 'application/octet-stream',
                        'multipart/form-data', 'multipart/form-data; boundary=xyz', 'application/x-www-form-urlencoded', 'junk/junk; x="'])
    if k < 0.2: return b'', ctype
    if k < 0.35: return rng.randbytes(rng.choice([1, 10, 1000, 5000])), ctype
    if k < 0.6: return json.dumps(fuzz_json(rng)).encode(), ctype
    if k < 0.7:
        s = json.dumps(fuzz_json(rng)).encode()
        return s[:rng.randint(0, max(len(s) - 1, 0))], ctype                                          # truncated JSON
    if k < 0.78: return rng.choice([b'1' + b'0' * 5000, b'1e999', b'-1e-999', str(2**200).encode(), b'{"name": 1e400}',
                                    b'{"amount": 99999999999999999999999}', b'NaN', b'Infinity']), ctype
    if k < 0.86:
        d = rng.choice([10, 500, 5000, 100_000])
        return rng.choice([b'[' * d + b']' * d, b'{"a":' * d + b'1' + b'}' * d, b'[' * d]), ctype   # nested, balanced or not
    if k < 0.94:
        name = rng.choice(['content', 'other'])
        body = (f'--xyz\r\nContent-Disposition: form-data; name="{name}"; filename="f"\r\nContent-Type: text/plain\r\n\r\n'.encode()
                + rng.randbytes(rng.choice([0, 10, 3000])) + rng.choice([b'\r\n--xyz--\r\n', b'', b'\r\n--xy']))
        return body, rng.choice(['multipart/form-data; boundary=xyz', 'multipart/form-data', 'multipart/form-data; boundary='])
    return rng.choice([b'null', b'[]', b'{}', b'""', b'true', b'[{"pattern": "*"}]', b'{"paths": []}']), ctype

def test_fuzz(tmp_path):
    """A few hundred malformed requests: none gets a 500, every 4xx error is lakeFS-shaped JSON, and the lake stays consistent.
    A 500 or a dropped connection raises ServerBug (an unhandled exception in the server); a malformed error body raises AssertionError."""
    rng = random.Random(20240613)
    lake = Lake(tmp_path/'lake', user='t')
    repo = lake.create_repository('fuzz')
    repo.put_many('main', dict(list(FUZZ_FILES.items())[:2])); repo.commit('main', 'first')
    repo.put_many('main', dict(list(FUZZ_FILES.items())[2:])); head = repo.commit('main', 'second', metadata={'k': 'v'})
    repo.tag('v1', 'main'); repo.create_branch('dev', 'main'); repo.protect('main')
    log0 = [c.id for c in repo.log('main')]
    alice, bob = create_credentials(lake, 'alice'), create_credentials(lake, 'bob')
    good = [basic(alice.access_key_id, alice.secret_access_key), basic(bob.access_key_id, bob.secret_access_key)]
    # wrong secrets cost an scrypt each (only right ones are cached), so few of them; unknown keys are cheap
    bad = [None, basic(alice.access_key_id, 'wrong-1'), basic(bob.access_key_id, ''), basic('AKIAJNOSUCHKEY000000', 'x'),
           b'Bearer abc', b'Basic !!!', b'Basic ' + base64.b64encode(b'no-colon'), b'Basic ' + base64.b64encode(b'\xff:\xfe'),
           b'Basic \xe9\xe9', b'Basic', b'Basic ' + good[0][6:-4]]
    refs = ['main', 'dev', 'v1', head.id, head.id[:12], 'main~1', 'main@', 'dev~1']
    real = {'repository': ['fuzz', 'fuzz', 'fuzz', 'nope'], 'branch': ['main', 'dev'], 'destinationBranch': ['main', 'dev'], 'tag': ['v1'],
            'commitId': [head.id, head.id[:12]], 'ref': refs, 'leftRef': refs, 'rightRef': refs, 'sourceRef': refs}
    templates = [(m, p) for m, p, *_ in ROUTES] + [('GET', '/nope'), ('GET', '/repositories/{repository}/nope/{branch}')]
    bugs, shape, n = [], [], 300
    try:
        with LakeServer(lake, max_upload=4096, guesses=(10_000, 10_000)) as srv:
            for i in range(n):
                tmpl_method, tmpl = rng.choice(templates)
                method = tmpl_method if rng.random() < 0.75 else rng.choice(['GET', 'POST', 'PUT', 'DELETE', 'HEAD'])
                junk = rng.choice([0, 0, 0.3, 0.6, 1])           # how many of the path's segments are junk
                path = re.sub(r'\{(\w+)\}', lambda m: fuzz_segment(rng, real.get(m[1], ['x']), junk), tmpl)
                if method == 'DELETE' and re.fullmatch(r'/repositories/fuzz/?', path) or '/repositories/fuzz/settings/' in path and method == 'PUT':
                    path = path.replace('/repositories/fuzz', '/repositories/nope', 1)   # keep the repository and its protection
                target = (API + path + fuzz_query(rng))[:12_000]     # under h11's 16 KiB limit on the request head
                body, ctype = fuzz_body(rng) if method in ('POST', 'PUT') or rng.random() < 0.1 else (b'', None)
                a = rng.random()
                auth = rng.choice(good) if a < 0.7 else rng.choice(bad)
                hs = [('Authorization', auth)] if auth is not None else []
                if ctype is not None: hs.append(('Content-Type', ctype))
                if rng.random() < 0.15: hs.append(('Range', rng.choice(['bytes=0-1', 'bytes=5-2', 'bytes=-', 'bytes=0-1,3-4', 'bytes=-0', 'lines=1',
                                                                          'bytes=' + '9' * rng.choice([20, 5000]) + '-', 'bytes=\xb2-\xb3'])))
                if rng.random() < 0.1: hs.append(('If-None-Match', rng.choice(['*', '"abc"', 'W/"x"', '', '\xff'])))
                if rng.random() < 0.1: hs.append(('X-Lakefs-Meta-' + rng.choice(['a', 'A_b', '-', '']), rng.choice(['v', '', '\xe9', 'x' * 500])))
                desc = f'#{i} {method} {target[:150]!r} auth={auth[:12] if auth else None!r} ctype={ctype!r} body={body[:60]!r}'
                try: status, rhs, rbody = raw(srv, method, target, hs, body)
                except (OSError, http.client.HTTPException) as e:
                    bugs.append(f'{desc} -> no response: {type(e).__name__}: {e}'); continue
                if status >= 500 and status != 501: bugs.append(f'{desc} -> {status} {rbody[:200]!r}')
                elif (400 <= status < 500 or status == 501) and rbody:
                    try: ok = rhs.get('content-type') == 'application/json' and isinstance(json.loads(rbody).get('message'), str)
                    except (ValueError, AttributeError): ok = False
                    if not ok: shape.append(f'{desc} -> {status} {rhs.get("content-type")!r} {rbody[:200]!r}')
            # the server still answers, and the lake is consistent: committed objects, history, protection, no stray staging on main
            assert httpx.get(srv.endpoint + API + '/healthcheck', timeout=10).status_code == 204
            with lake.session():
                repo = lake.repository('fuzz')
                for p, data in FUZZ_FILES.items():
                    assert repo.get(head.id, p) == data and repo.get('main', p) == data, p
                assert [c.id for c in repo.log('main')] == log0, 'the history of main changed'
                assert repo.protection_rules() == ['main'] and repo.uncommitted('main') == []
            with httpx.Client(base_url=srv.endpoint + API, auth=(alice.access_key_id, alice.secret_access_key), timeout=30) as c:
                listing = c.get('/repositories/fuzz/refs/main/objects/ls')
                assert listing.status_code == 200 and sorted(o['path'] for o in listing.json()['results']) == sorted(FUZZ_FILES), listing.text
                assert c.get('/repositories/fuzz/refs/main/objects', params={'path': 'data/sub/b.bin'}).content == FUZZ_FILES['data/sub/b.bin']
                # a new commit through the API still works: on a branch, merged into the protected main
                assert c.post('/repositories/fuzz/branches', json={'name': 'after-fuzz', 'source': 'main'}).status_code == 201
                assert c.post('/repositories/fuzz/branches/after-fuzz/objects', params={'path': 'after.txt'}, content=b'after').status_code == 201
                assert c.post('/repositories/fuzz/branches/after-fuzz/commits', json={'message': 'after the fuzz'}).status_code == 201
                merged = c.post('/repositories/fuzz/refs/after-fuzz/merge/main', json={})
                assert merged.status_code == 200, merged.text
        with lake.session():                                                               # and so does one through the lake itself
            repo = lake.repository('fuzz')
            assert repo.head('main').id == merged.json()['reference'] and repo.get('main', 'after.txt') == b'after'
            assert all(repo.get('main', p) == data for p, data in FUZZ_FILES.items())
            repo.create_branch('direct', 'main'); repo.put('direct', 'direct.txt', b'direct')
            c = repo.commit('direct', 'a direct commit')
            assert repo.log('direct')[0] == c and repo.get('direct', 'direct.txt') == b'direct'
    finally: lake.store.close()
    assert not shape, f'{len(shape)} 4xx responses that are not JSON with a "message":\n' + '\n'.join(shape)
    if bugs: raise ServerBug(f'{len(bugs)} of {n} requests got a 500 (or no response):\n' + '\n'.join(bugs))

