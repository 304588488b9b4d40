"""What a lakeFS client learns when it sets up against our server: the namespace and storage id a repository reports, and
boolean query parameters in the spellings clients send -- through the real `lakefs_sdk` client and plain HTTP."""
import lakefs_sdk, pytest, requests
from lakefs_sdk.exceptions import BadRequestException
from mlinfra_nb.lake import Lake
from mlinfra_nb.lake.server import LakeServer, create_credentials

@pytest.fixture
def sdk(tmp_path):
    lake = Lake(tmp_path/'lake', user='server')
    key = create_credentials(lake, 'alice')
    with LakeServer(lake) as srv:
        cfg = lakefs_sdk.Configuration(host=srv.endpoint + '/api/v1', username=key.access_key_id, password=key.secret_access_key)
        with lakefs_sdk.ApiClient(cfg) as client: yield lake, srv, client, key
    lake.store.close()

def test_config_reports_local_prefix(sdk):
    lake, srv, client, key = sdk
    assert lakefs_sdk.ConfigApi(client).get_config().storage_config.default_namespace_prefix == 'local://'
    assert lakefs_sdk.InternalApi(client).get_storage_config().default_namespace_prefix == 'local://'   # deprecated, still served
    made = lakefs_sdk.RepositoriesApi(client).create_repository(lakefs_sdk.RepositoryCreation(name='prefixed', storage_namespace='local://' + 'prefixed'))
    assert made.storage_namespace == 'local://prefixed'

def test_repository_reports_namespace_it_was_created_with(sdk, tmp_path):
    lake, srv, client, key = sdk
    repos = lakefs_sdk.RepositoriesApi(client)
    made = repos.create_repository(lakefs_sdk.RepositoryCreation(name='alpha', storage_namespace='local://alpha'))
    assert (made.storage_namespace, made.storage_id) == ('local://alpha', '')
    got = repos.get_repository('alpha')
    assert (got.storage_namespace, got.storage_id) == ('local://alpha', '')
    repos.create_repository(lakefs_sdk.RepositoryCreation(name='beta', storage_namespace='local://some/where', storage_id=''))
    assert {r.id: r.storage_namespace for r in repos.list_repositories().results} == {'alpha': 'local://alpha', 'beta': 'local://some/where'}
    raw = requests.get(f'{srv.endpoint}/api/v1/repositories/beta', auth=(key.access_key_id, key.secret_access_key)).json()
    assert raw['storage_id'] == ''                                   # present and empty, not null
    lake.create_repository('gamma')                                  # made without the server: reports where its data is
    assert repos.get_repository('gamma').storage_namespace == f'local://{lake.root}'
    repos.delete_repository('alpha')                                 # a new repository of the same name keeps its own namespace
    assert repos.create_repository(lakefs_sdk.RepositoryCreation(name='alpha', storage_namespace='local://alpha2')).storage_namespace == 'local://alpha2'

def test_namespace_survives_restart(tmp_path):
    lake = Lake(tmp_path/'lake', user='server'); key = create_credentials(lake, 'alice')
    auth = (key.access_key_id, key.secret_access_key)
    with LakeServer(lake) as srv:
        r = requests.post(f'{srv.endpoint}/api/v1/repositories', json={'name': 'kept', 'storage_namespace': 'local://kept/here'}, auth=auth)
        assert r.status_code == 201
    lake.store.close()
    lake = Lake(tmp_path/'lake', user='server')
    with LakeServer(lake) as srv:
        assert requests.get(f'{srv.endpoint}/api/v1/repositories/kept', auth=auth).json()['storage_namespace'] == 'local://kept/here'
    lake.store.close()

@pytest.mark.parametrize('storage_id', ['s3', 'default', ' '])
def test_other_storage_id_is_400(sdk, storage_id):
    lake, srv, client, key = sdk
    repos = lakefs_sdk.RepositoriesApi(client)
    with pytest.raises(BadRequestException, match='storage_id'):
        repos.create_repository(lakefs_sdk.RepositoryCreation(name='nostore', storage_namespace='local://nostore', storage_id=storage_id))
    assert 'nostore' not in lake.repositories()

def test_boolean_query_parameters_in_any_case(sdk):
    lake, srv, client, key = sdk
    r = lake.create_repository('logs')
    for i in range(30): r.commit('main', f'c{i}', allow_empty=True)
    auth, url = (key.access_key_id, key.secret_access_key), f'{srv.endpoint}/api/v1/repositories/logs/refs/main/commits'
    for spelling in ('true', 'True', 'TRUE'):
        got = requests.get(url, params={'amount': 10, 'limit': spelling}, auth=auth).json()
        assert len(got['results']) == 10 and got['pagination']['has_more'] is False and got['pagination']['next_offset'] == ''
    for spelling in ('false', 'False'):
        got = requests.get(url, params={'amount': 10, 'limit': spelling}, auth=auth).json()
        assert len(got['results']) == 10 and got['pagination']['has_more'] is True
    assert requests.get(url, params={'limit': 'maybe'}, auth=auth).status_code == 400
    refs = lakefs_sdk.RefsApi(client)
    page = refs.log_commits('logs', 'main', amount=10, limit=True)   # the SDK's own spelling
    assert len(page.results) == 10 and not page.pagination.has_more
    merged = lake.repository('logs'); merged.create_branch('side', 'main')
    merged.commit('side', 'on side', allow_empty=True); merged.merge('side', into='main')
    first = requests.get(url, params={'first_parent': 'True'}, auth=auth).json()['results']
    assert 'on side' not in [c['message'] for c in first]
    assert [c.message for c in refs.log_commits('logs', 'main', first_parent=True).results] == [c['message'] for c in first]
    bare = requests.post(f'{srv.endpoint}/api/v1/repositories', params={'bare': 'True'}, auth=auth,
                         json={'name': 'bare', 'storage_namespace': 'local://bare'})
    assert bare.status_code == 400 and 'bare' in bare.json()['message']


def test_credentials_create_takes_a_given_key_pair(tmp_path, capsys):
    """`mlinfra lake credentials create --access-key-id ... --secret-access-key ...` makes the key pair a client or a third-party
    test suite expects (lakeFS's quickstart pair here), and a lakeFS client signs in with it; a malformed id is one clear error."""
    from mlinfra_nb.cli import main
    root = tmp_path/'lake'
    assert main(['lake', 'credentials', 'create', '--root', str(root), '--access-key-id', 'AKIAIOSFOLQUICKSTART',
                 '--secret-access-key', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY']) == 0
    assert 'access_key_id: AKIAIOSFOLQUICKSTART' in capsys.readouterr().out
    lake = Lake(root, user='server')
    with LakeServer(lake) as srv:
        cfg = lakefs_sdk.Configuration(host=srv.endpoint + '/api/v1', username='AKIAIOSFOLQUICKSTART',
                                       password='wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY')
        with lakefs_sdk.ApiClient(cfg) as client:
            assert lakefs_sdk.AuthApi(client).get_current_user().user.id == 'admin'
    lake.store.close()
    assert main(['lake', 'credentials', 'create', '--root', str(root), '--access-key-id', 'no-dashes!']) == 1
    assert 'invalid access key id' in capsys.readouterr().err
