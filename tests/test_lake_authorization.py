"""The authorization matrix: for each built-in group and for a custom policy, every server route and every lake operation is
allowed or refused as lakeFS decides, and a refusal changes nothing.

The server is driven through the official generated SDK (`lakefs_sdk`), including its `AuthApi` and the setup call that makes
the first admin. What each group may do is written out here from lakeFS's group definitions (full RBAC: Admins, SuperUsers,
Developers, Viewers) and the check lakeFS's controller makes for each route; it is not computed by the code under test."""
import json, tempfile
import lakefs_sdk, pandas as pd, pytest
from lakefs_sdk.exceptions import ApiException
from mlinfra_nb.lake import Lake
from mlinfra_nb.lake.auth import (Unauthorized, add_member, attach_policy, create_credentials, create_group, create_policy, create_user,
                                  delete_credentials, delete_group, delete_policy, delete_user, detach_policy, get_group, get_policy,
                                  get_user, group_members, list_credentials, list_groups, list_policies, list_users, remove_member,
                                  update_policy, user_groups, attached_policies)
from mlinfra_nb.lake.server import CHECKS, PER_ITEM, ROUTES, SIGNED_IN, UNSUPPORTED, LakeServer

GROUPS = ('Admins', 'SuperUsers', 'Developers', 'Viewers')
USERS = {'Admins': 'ada', 'SuperUsers': 'sam', 'Developers': 'dev', 'Viewers': 'vic', 'custom': 'carol'}
EVERYONE, WRITERS, OWNERS, ADMINS = set(GROUPS), {'Admins', 'SuperUsers', 'Developers'}, {'Admins', 'SuperUsers'}, {'Admins'}
REPO_MGMT_READ = {'Admins', 'SuperUsers', 'Developers'}   # branches:Get* comes with RepoManagement*, which Viewers lack

# carol's own policy: read what is public in 'mxr' (not the secrets), drop files in incoming/, commit on her branch, read herself
CAROL = [{'effect': 'allow', 'action': ['fs:ReadRepository', 'fs:ListObjects', 'fs:ReadObject'],
          'resource': '["arn:lakefs:fs:::repository/mxr", "arn:lakefs:fs:::repository/mxr/object/public/*"]'},
         {'effect': 'deny', 'action': ['fs:ReadObject'], 'resource': 'arn:lakefs:fs:::repository/mxr/object/public/secret*'},
         {'effect': 'allow', 'action': ['fs:WriteObject'], 'resource': 'arn:lakefs:fs:::repository/mxr/object/incoming/*'},
         {'effect': 'allow', 'action': ['fs:CreateCommit'], 'resource': 'arn:lakefs:fs:::repository/mxr/branch/w-carol'},
         {'effect': 'allow', 'action': ['auth:ReadUser'], 'resource': 'arn:lakefs:auth:::user/${user}'}]

S = lakefs_sdk
PAYLOAD = tempfile.NamedTemporaryFile(prefix='authz-', suffix='.csv', delete=False)   # the generated SDK uploads files by name
PAYLOAD.write(b'id\n1\n'); PAYLOAD.close()
R = '/repositories/{repository}'
U, G, P = '/auth/users/{userId}', '/auth/groups/{groupId}', '/auth/policies/{policyId}'

# (name, route, groups allowed, carol allowed, SDK call on (apis, user, ctx)); each refused call must change nothing
ROWS = [
    ('list repositories', ('GET', '/repositories'), EVERYONE, False, lambda a, u, x: a.repos.list_repositories()),
    ('get repository', ('GET', R), EVERYONE, True, lambda a, u, x: a.repos.get_repository('mxr')),
    ('repository metadata', ('GET', f'{R}/metadata'), EVERYONE, True, lambda a, u, x: a.repos.get_repository_metadata('mxr')),
    ('create repository', ('POST', '/repositories'), OWNERS, False,
     lambda a, u, x: a.repos.create_repository(S.RepositoryCreation(name=f'new-{u}', storage_namespace=f'local://new-{u}'))),
    ('delete repository', ('DELETE', R), OWNERS, False, lambda a, u, x: a.repos.delete_repository(f'x-{u}')),
    ('list branches', ('GET', f'{R}/branches'), EVERYONE, False, lambda a, u, x: a.branches.list_branches('mxr')),
    ('get branch', ('GET', f'{R}/branches/{{branch}}'), EVERYONE, False, lambda a, u, x: a.branches.get_branch('mxr', 'main')),
    ('create branch', ('POST', f'{R}/branches'), WRITERS, False,
     lambda a, u, x: a.branches.create_branch('mxr', S.BranchCreation(name=f'n-{u}', source='main'))),
    ('delete branch', ('DELETE', f'{R}/branches/{{branch}}'), WRITERS, False, lambda a, u, x: a.branches.delete_branch('mxr', f'd-{u}')),
    ('reset branch', ('PUT', f'{R}/branches/{{branch}}'), WRITERS, False,
     lambda a, u, x: a.branches.reset_branch('mxr', f'r-{u}', S.ResetCreation(type='reset'))),
    ('hard reset', ('PUT', f'{R}/branches/{{branch}}/hard_reset'), WRITERS, False,
     lambda a, u, x: a.experimental.hard_reset_branch('mxr', f'h-{u}', 'main')),
    ('revert', ('POST', f'{R}/branches/{{branch}}/revert'), WRITERS, False,
     lambda a, u, x: a.branches.revert_branch('mxr', f'v-{u}', S.RevertCreation(ref=x['revert'][u], parent_number=0))),
    ('cherry-pick', ('POST', f'{R}/branches/{{branch}}/cherry-pick'), WRITERS, False,
     lambda a, u, x: a.branches.cherry_pick('mxr', f'c-{u}', S.CherryPickCreation(ref=x['revert'][u]))),
    ('list tags', ('GET', f'{R}/tags'), EVERYONE, False, lambda a, u, x: a.tags.list_tags('mxr')),
    ('get tag', ('GET', f'{R}/tags/{{tag}}'), EVERYONE, False, lambda a, u, x: a.tags.get_tag('mxr', 'v1')),
    ('create tag', ('POST', f'{R}/tags'), WRITERS, False, lambda a, u, x: a.tags.create_tag('mxr', S.TagCreation(id=f'tn-{u}', ref='main'))),
    ('delete tag', ('DELETE', f'{R}/tags/{{tag}}'), WRITERS, False, lambda a, u, x: a.tags.delete_tag('mxr', f't-{u}')),
    ('get commit', ('GET', f'{R}/commits/{{commitId}}'), EVERYONE, False, lambda a, u, x: a.commits.get_commit('mxr', 'main')),
    ('log', ('GET', f'{R}/refs/{{ref}}/commits'), EVERYONE, False, lambda a, u, x: a.refs.log_commits('mxr', 'main')),
    ('branch diff', ('GET', f'{R}/branches/{{branch}}/diff'), EVERYONE, True, lambda a, u, x: a.branches.diff_branch('mxr', 'main')),
    ('diff refs', ('GET', f'{R}/refs/{{leftRef}}/diff/{{rightRef}}'), EVERYONE, True, lambda a, u, x: a.refs.diff_refs('mxr', 'v1', 'main')),
    ('merge base', ('GET', f'{R}/refs/{{sourceRef}}/merge/{{destinationBranch}}'), EVERYONE, False,
     lambda a, u, x: a.refs.find_merge_base('mxr', 'v1', 'main')),
    ('merge', ('POST', f'{R}/refs/{{sourceRef}}/merge/{{destinationBranch}}'), WRITERS, False,
     lambda a, u, x: a.refs.merge_into_branch('mxr', 'main', f'm-{u}', merge=S.Merge(allow_empty=True))),
    ('get protection', ('GET', f'{R}/settings/branch_protection'), REPO_MGMT_READ, False, lambda a, u, x: a.repos.get_branch_protection_rules('mxr')),
    ('set protection', ('PUT', f'{R}/settings/branch_protection'), ADMINS, False,
     lambda a, u, x: a.repos.set_branch_protection_rules('mxr', [S.BranchProtectionRule(pattern='release-*')])),
    ('list objects', ('GET', f'{R}/refs/{{ref}}/objects/ls'), EVERYONE, True, lambda a, u, x: a.objects.list_objects('mxr', 'main')),
    ('stat object', ('GET', f'{R}/refs/{{ref}}/objects/stat'), EVERYONE, True, lambda a, u, x: a.objects.stat_object('mxr', 'main', 'public/a.csv')),
    ('get object', ('GET', f'{R}/refs/{{ref}}/objects'), EVERYONE, True, lambda a, u, x: a.objects.get_object('mxr', 'main', 'public/a.csv')),
    ('head object', ('HEAD', f'{R}/refs/{{ref}}/objects'), EVERYONE, True, lambda a, u, x: a.objects.head_object('mxr', 'main', 'public/a.csv')),
    ('get a secret', ('GET', f'{R}/refs/{{ref}}/objects'), EVERYONE, False, lambda a, u, x: a.objects.get_object('mxr', 'main', 'public/secret.csv')),
    ('get a private object', ('GET', f'{R}/refs/{{ref}}/objects'), EVERYONE, False, lambda a, u, x: a.objects.get_object('mxr', 'main', 'private/p.csv')),
    ('upload to incoming/', ('POST', f'{R}/branches/{{branch}}/objects'), WRITERS, True,
     lambda a, u, x: a.objects.upload_object('mxr', f'w-{u}', f'incoming/{u}.csv', content=PAYLOAD.name)),
    ('upload to public/', ('POST', f'{R}/branches/{{branch}}/objects'), WRITERS, False,
     lambda a, u, x: a.objects.upload_object('mxr', f'w-{u}', f'public/{u}.csv', content=PAYLOAD.name)),
    ('copy into incoming/', ('POST', f'{R}/branches/{{branch}}/objects/copy'), WRITERS, True,
     lambda a, u, x: a.objects.copy_object('mxr', f'w-{u}', f'incoming/copy-{u}.csv', S.ObjectCopyCreation(src_path='public/a.csv', src_ref='main'))),
    ('commit', ('POST', f'{R}/branches/{{branch}}/commits'), WRITERS, True,
     lambda a, u, x: a.commits.commit('mxr', f'w-{u}', S.CommitCreation(message=f'{u} commits', allow_empty=True))),
    ('delete object', ('DELETE', f'{R}/branches/{{branch}}/objects'), WRITERS, False, lambda a, u, x: a.objects.delete_object('mxr', f'w-{u}', 'del/one.csv')),
    ('delete objects', ('POST', f'{R}/branches/{{branch}}/objects/delete'), WRITERS, False,
     lambda a, u, x: a.objects.delete_objects('mxr', f'w-{u}', S.PathList(paths=['del/two.csv']))),
    ('config', ('GET', '/config'), EVERYONE, True, lambda a, u, x: a.config.get_config()),
    ('version', ('GET', '/config/version'), EVERYONE, True, lambda a, u, x: a.internal.get_lake_fs_version()),
    ('storage config', ('GET', '/config/storage'), EVERYONE, False, lambda a, u, x: a.internal.get_storage_config()),
    ('current user', ('GET', '/user'), EVERYONE, True, lambda a, u, x: a.auth.get_current_user()),
    ('usage statistics', ('POST', '/statistics'), EVERYONE, True, lambda a, u, x: a.internal.post_stats_events(S.StatsEventsList(events=[]))),
    ('list users', ('GET', '/auth/users'), ADMINS, False, lambda a, u, x: a.auth.list_users()),
    ('create user', ('POST', '/auth/users'), ADMINS, False, lambda a, u, x: a.auth.create_user(S.UserCreation(id=f'made-by-{u}'))),
    ('read oneself', ('GET', U), ADMINS, True, lambda a, u, x: a.auth.get_user(u)),
    ('read another user', ('GET', U), ADMINS, False, lambda a, u, x: a.auth.get_user('root')),
    ('delete user', ('DELETE', U), ADMINS, False, lambda a, u, x: a.auth.delete_user(f'gone-{u}')),
    ('own groups', ('GET', f'{U}/groups'), ADMINS, True, lambda a, u, x: a.auth.list_user_groups(u)),
    ('own policies', ('GET', f'{U}/policies'), ADMINS, True, lambda a, u, x: a.auth.list_user_policies(u, effective=True)),
    ('attach to a user', ('PUT', f'{U}/policies/{{policyId}}'), ADMINS, False, lambda a, u, x: a.auth.attach_policy_to_user(f'target-{u}', 'FSReadAll')),
    ('detach from a user', ('DELETE', f'{U}/policies/{{policyId}}'), ADMINS, False, lambda a, u, x: a.auth.detach_policy_from_user(f'target-{u}', 'FSFullAccess')),
    ('own keys', ('GET', f'{U}/credentials'), EVERYONE, False, lambda a, u, x: a.auth.list_user_credentials(u)),
    ('another user\'s keys', ('GET', f'{U}/credentials'), ADMINS, False, lambda a, u, x: a.auth.list_user_credentials('root')),
    ('new own key', ('POST', f'{U}/credentials'), EVERYONE, False, lambda a, u, x: a.auth.create_credentials(u)),
    ('read own key', ('GET', f'{U}/credentials/{{accessKeyId}}'), EVERYONE, False, lambda a, u, x: a.auth.get_credentials(u, x['spare'][u])),
    ('revoke own key', ('DELETE', f'{U}/credentials/{{accessKeyId}}'), EVERYONE, False, lambda a, u, x: a.auth.delete_credentials(u, x['spare'][u])),
    ('list groups', ('GET', '/auth/groups'), ADMINS, False, lambda a, u, x: a.auth.list_groups()),
    ('create group', ('POST', '/auth/groups'), ADMINS, False, lambda a, u, x: a.auth.create_group(S.GroupCreation(id=f'g-{u}'))),
    ('get group', ('GET', G), ADMINS, False, lambda a, u, x: a.auth.get_group('Viewers')),
    ('delete group', ('DELETE', G), ADMINS, False, lambda a, u, x: a.auth.delete_group(f'gd-{u}')),
    ('group members', ('GET', f'{G}/members'), ADMINS, False, lambda a, u, x: a.auth.list_group_members('Viewers')),
    ('add member', ('PUT', f'{G}/members/{{userId}}'), ADMINS, False, lambda a, u, x: a.auth.add_group_membership(f'gm-{u}', f'target-{u}')),
    ('remove member', ('DELETE', f'{G}/members/{{userId}}'), ADMINS, False, lambda a, u, x: a.auth.delete_group_membership(f'gx-{u}', f'target-{u}')),
    ('group policies', ('GET', f'{G}/policies'), ADMINS, False, lambda a, u, x: a.auth.list_group_policies('Viewers')),
    ('attach to a group', ('PUT', f'{G}/policies/{{policyId}}'), ADMINS, False, lambda a, u, x: a.auth.attach_policy_to_group(f'gm-{u}', 'FSReadAll')),
    ('detach from a group', ('DELETE', f'{G}/policies/{{policyId}}'), ADMINS, False, lambda a, u, x: a.auth.detach_policy_from_group(f'gx-{u}', 'FSReadAll')),
    ('list policies', ('GET', '/auth/policies'), ADMINS, False, lambda a, u, x: a.auth.list_policies()),
    ('create policy', ('POST', '/auth/policies'), ADMINS, False,
     lambda a, u, x: a.auth.create_policy(S.Policy(id=f'p-{u}', statement=[S.Statement(effect='allow', action=['fs:ReadObject'], resource='*')]))),
    ('get policy', ('GET', P), ADMINS, False, lambda a, u, x: a.auth.get_policy('FSReadAll')),
    ('update policy', ('PUT', P), ADMINS, False,
     lambda a, u, x: a.auth.update_policy(f'pu-{u}', S.Policy(id=f'pu-{u}', statement=[S.Statement(effect='deny', action=['fs:*'], resource='*')]))),
    ('delete policy', ('DELETE', P), ADMINS, False, lambda a, u, x: a.auth.delete_policy(f'pd-{u}')),
]


class Apis:
    "The SDK's API groups for one user."
    def __init__(self, endpoint:str, key:str, secret:str):
        c = S.ApiClient(S.Configuration(host=endpoint + '/api/v1', username=key, password=secret))
        self.repos, self.branches, self.tags, self.commits, self.refs = S.RepositoriesApi(c), S.BranchesApi(c), S.TagsApi(c), S.CommitsApi(c), S.RefsApi(c)
        self.objects, self.config, self.internal, self.auth, self.experimental = S.ObjectsApi(c), S.ConfigApi(c), S.InternalApi(c), S.AuthApi(c), S.ExperimentalApi(c)


def state(lake:Lake)->dict:
    "Everything a request can change: refs, staged changes, commits, protection rules and access control."
    with lake.store.connect() as con:
        q = lambda sql: sorted(map(repr, con.execute(sql).fetchall()))
        return {t: q(f"SELECT * FROM {t}") for t in ('repositories', 'refs', 'staging', 'commits', 'protection', 'auth_users', 'auth_groups',
                                                        'auth_policies', 'auth_members', 'auth_attached', 'credentials')}


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    "A served lake set up through the SDK: the first admin from setup_lakefs, then a user per built-in group and carol."
    lake = Lake(tmp_path_factory.mktemp('authz')/'lake', user='setup')
    with LakeServer(lake) as srv:
        setup = S.InternalApi(S.ApiClient(S.Configuration(host=srv.endpoint + '/api/v1')))
        assert setup.get_setup_state().state == 'not_initialized'
        root = setup.setup(S.Setup(username='root'))
        assert setup.get_setup_state().state == 'initialized'
        with pytest.raises(ApiException) as e: setup.setup(S.Setup(username='again'))
        assert e.value.status == 409
        admin = Apis(srv.endpoint, root.access_key_id, root.secret_access_key)
        apis = {}
        for group, u in USERS.items():
            admin.auth.create_user(S.UserCreation(id=u))
            if group in GROUPS: admin.auth.add_group_membership(group, u)
            key = admin.auth.create_credentials(u)
            apis[u] = Apis(srv.endpoint, key.access_key_id, key.secret_access_key)
        admin.auth.create_policy(S.Policy(id='Carol', statement=[S.Statement(**s) for s in CAROL]))
        admin.auth.attach_policy_to_user('carol', 'Carol')
        ctx = prepare(lake)
        yield lake, srv, apis, ctx
    lake.store.close()


def prepare(lake:Lake)->dict:
    "What each user's calls act on: a repository 'mxr', and per user branches, tags, a repository, groups, policies and a spare key."
    repo = lake.create_repository('mxr')
    repo.put_many('main', {'public/a.csv': b'id\n1\n', 'public/secret.csv': b'pin\n1234\n', 'private/p.csv': b'p\n'}); repo.commit('main', 'seed')
    repo.tag('v1', 'main')
    repo.put('main', 'public/b.csv', b'id\n2\n'); repo.commit('main', 'more')
    ctx = {'revert': {}, 'spare': {}}
    for u in USERS.values():
        lake.create_repository(f'x-{u}')
        for b in ('d', 'r', 'h', 'v', 'w', 'm', 'c'): repo.create_branch(f'{b}-{u}', 'main')
        repo.put('r-' + u, 'staged.txt', b'staged')
        repo.put('v-' + u, 'undo.txt', b'undo'); ctx['revert'][u] = repo.commit('v-' + u, 'to be reverted').id
        repo.put_many('w-' + u, {'del/one.csv': b'1', 'del/two.csv': b'2'}); repo.commit('w-' + u, 'to delete')
        repo.tag(f't-{u}', 'main')
        create_user(lake, f'gone-{u}'); create_user(lake, f'target-{u}')
        for g in ('gd', 'gm', 'gx'): create_group(lake, f'{g}-{u}')
        add_member(lake, f'gx-{u}', f'target-{u}'); attach_policy(lake, 'FSReadAll', group=f'gx-{u}'); attach_policy(lake, 'FSFullAccess', user=f'target-{u}')
        for p in ('pu', 'pd'): create_policy(lake, f'{p}-{u}', [{'effect': 'allow', 'action': ['fs:ReadObject'], 'resource': '*'}])
        ctx['spare'][u] = create_credentials(lake, u).access_key_id
    return ctx


def refused(e:Exception)->bool:
    "Whether `e` is lakeFS's answer to a request the policies do not allow."
    if not isinstance(e, ApiException) or e.status != 401: return False
    return e.body is None or 'insufficient permissions' in (e.body if isinstance(e.body, str) else e.body.decode())


@pytest.mark.parametrize('group', [*GROUPS, 'custom'])
def test_server_routes_as_lakefs_decides(world, group):
    lake, srv, apis, ctx = world
    u, wrong = USERS[group], []
    for name, route, groups, carol, call in ROWS:
        expect = carol if group == 'custom' else group in groups
        before = state(lake)
        try: call(apis[u], u, ctx); got = True
        except Exception as e:
            if not refused(e): raise AssertionError(f"{group}: {name} failed otherwise than refused: {e}") from e
            got = False
            after = state(lake)
            if name != 'delete objects':   # lakeFS deletes the allowed paths of a many-object delete; here every path is refused
                assert after == before, f"{group}: the refused '{name}' changed {[t for t in before if before[t] != after[t]]}"
        if got != expect: wrong.append(f"{name}: {'allowed' if got else 'refused'}, lakeFS would {'allow' if expect else 'refuse'} it")
    assert not wrong, f"{group} ({u}):\n" + '\n'.join(wrong)


def test_every_checked_route_is_in_the_matrix():
    checked = set(CHECKS) | PER_ITEM | SIGNED_IN
    assert {r for _, r, *_ in ROWS} == checked, checked.symmetric_difference({r for _, r, *_ in ROWS})
    unsupported = {r for rs in UNSUPPORTED.values() for r in rs}
    for method, path, fn, body, public in ROUTES:   # and nothing else is served without a check
        assert public or (method, path) in checked | unsupported, (method, path)


def test_listing_shows_what_the_user_may_list(world):
    lake, srv, apis, ctx = world
    create_policy(lake, 'ListMx', [{'effect': 'allow', 'action': ['fs:ListRepositories'], 'resource': 'arn:lakefs:fs:::repository/mxr'}])
    attach_policy(lake, 'ListMx', user='carol')
    try: assert [r.id for r in apis['carol'].repos.list_repositories().results] == ['mxr']
    finally: detach_policy(lake, 'ListMx', user='carol'); delete_policy(lake, 'ListMx')
    with pytest.raises(ApiException) as e: apis['carol'].repos.list_repositories()
    assert e.value.status == 401


def test_many_object_delete_decides_per_path(world):
    lake, srv, apis, ctx = world
    repo = lake.repository('mxr')
    repo.create_branch('mixed', 'main'); repo.put_many('mixed', {'incoming/ok.csv': b'1', 'public/no.csv': b'2'}); repo.commit('mixed', 'two')
    create_policy(lake, 'DeleteIncoming', [{'effect': 'allow', 'action': ['fs:DeleteObject'], 'resource': 'arn:lakefs:fs:::repository/mxr/object/incoming/*'}])
    attach_policy(lake, 'DeleteIncoming', user='carol')
    with pytest.raises(ApiException) as e:
        apis['carol'].objects.delete_objects('mxr', 'mixed', S.PathList(paths=['incoming/ok.csv', 'public/no.csv']))
    assert e.value.status == 401 and 'not allowed to fs:DeleteObject' in str(e.value.body)
    assert {c.path for c in repo.uncommitted('mixed')} == {'incoming/ok.csv'}   # the allowed path went, as in lakeFS
    assert repo.exists('mixed', 'public/no.csv')


# --- the Lake API for a named user ---------------------------------------------------------------------------------------

def lake_rows(lake:Lake, u:str, ctx:dict)->list:
    "The same decisions through `lake.as_user(u)`: (name, groups allowed, carol allowed, call)."
    me = lake.as_user(u)
    mx = lambda: me.repository('mxr')   # every user here may read the repository itself
    df = pd.DataFrame({'id': [1, 2]})
    return [
        ('repository', EVERYONE, True, lambda: me.repository('mxr')),
        ('create repository', OWNERS, False, lambda: me.create_repository(f'lnew-{u}')),
        ('delete repository', OWNERS, False, lambda: me.delete_repository(f'lx-{u}')),
        ('branches', EVERYONE, False, lambda: mx().branches()),
        ('head', EVERYONE, False, lambda: mx().head('main')),
        ('create branch', WRITERS, False, lambda: mx().create_branch(f'ln-{u}', 'main')),
        ('delete branch', WRITERS, False, lambda: mx().delete_branch(f'ld-{u}')),
        ('reset', WRITERS, False, lambda: mx().reset(f'lr-{u}')),
        ('hard reset', WRITERS, False, lambda: mx().hard_reset(f'lh-{u}', 'main')),
        ('tags', EVERYONE, False, lambda: mx().tags()),
        ('tag', WRITERS, False, lambda: mx().tag(f'ltn-{u}', 'main')),
        ('delete tag', WRITERS, False, lambda: mx().delete_tag(f'lt-{u}')),
        ('commit info', EVERYONE, False, lambda: mx().commit_info('main')),
        ('log', EVERYONE, False, lambda: mx().log('main', limit=2)),
        ('diff', EVERYONE, True, lambda: mx().diff('v1', 'main')),
        ('uncommitted', EVERYONE, True, lambda: mx().uncommitted('main')),
        ('merge base', EVERYONE, False, lambda: mx().merge_base('v1', 'main')),
        ('merge', WRITERS, False, lambda: mx().merge('main', into=f'lm-{u}', allow_empty=True)),
        ('protection rules', REPO_MGMT_READ, False, lambda: mx().protection_rules()),
        ('protect', ADMINS, False, lambda: mx().protect('release-*')),
        ('list', EVERYONE, True, lambda: mx().list('main')),
        ('get', EVERYONE, True, lambda: mx().get('main', 'public/a.csv')),
        ('stat', EVERYONE, True, lambda: mx().stat('main', 'public/a.csv')),
        ('get a secret', EVERYONE, False, lambda: mx().get('main', 'public/secret.csv')),
        ('put in incoming/', WRITERS, True, lambda: mx().put(f'w-{u}', f'incoming/l-{u}.csv', b'1')),
        ('put in public/', WRITERS, False, lambda: mx().put(f'w-{u}', f'public/l-{u}.csv', b'1')),
        ('commit', WRITERS, True, lambda: mx().commit(f'w-{u}', 'lake commit', allow_empty=True)),
        ('delete', WRITERS, False, lambda: mx().delete(f'lw-{u}', 'del/one.csv')),
        ('write a table in incoming/', WRITERS, True, lambda: mx().write_table(f'w-{u}', f'incoming/t-{u}', df)),
        ('read a public table', EVERYONE, True, lambda: mx().table('main', 'public/t').df()),
        ('list users', ADMINS, False, lambda: list_users(me)),
        ('create user', ADMINS, False, lambda: create_user(me, f'lmade-{u}')),
        ('read oneself', ADMINS, True, lambda: get_user(me, u)),
        ('delete user', ADMINS, False, lambda: delete_user(me, f'lgone-{u}')),
        ('own groups', ADMINS, True, lambda: user_groups(me, u)),
        ('own policies', ADMINS, True, lambda: attached_policies(me, user=u, effective=True)),
        ('list groups', ADMINS, False, lambda: list_groups(me)),
        ('create group', ADMINS, False, lambda: create_group(me, f'lg-{u}')),
        ('get group', ADMINS, False, lambda: get_group(me, 'Viewers')),
        ('members', ADMINS, False, lambda: group_members(me, 'Viewers')),
        ('add member', ADMINS, False, lambda: add_member(me, f'gm-{u}', u)),
        ('remove member', ADMINS, False, lambda: remove_member(me, f'gx-{u}', f'target-{u}')),
        ('delete group', ADMINS, False, lambda: delete_group(me, f'lgd-{u}')),
        ('list policies', ADMINS, False, lambda: list_policies(me)),
        ('create policy', ADMINS, False, lambda: create_policy(me, f'lp-{u}', [{'effect': 'allow', 'action': ['fs:*'], 'resource': '*'}])),
        ('get policy', ADMINS, False, lambda: get_policy(me, 'FSReadAll')),
        ('update policy', ADMINS, False, lambda: update_policy(me, f'pu-{u}', [{'effect': 'allow', 'action': ['fs:*'], 'resource': '*'}])),
        ('delete policy', ADMINS, False, lambda: delete_policy(me, f'lpd-{u}')),
        ('attach', ADMINS, False, lambda: attach_policy(me, 'FSFullAccess', user=u)),
        ('detach', ADMINS, False, lambda: detach_policy(me, 'FSFullAccess', user=f'target-{u}')),
        ('own keys', EVERYONE, False, lambda: list_credentials(me, u)),
        ('new own key', EVERYONE, False, lambda: create_credentials(me, u)),
        ('revoke own key', EVERYONE, False, lambda: delete_credentials(me, ctx['lspare'][u], user=u)),
        ('another user\'s keys', ADMINS, False, lambda: list_credentials(me, 'root')),
        ('garbage collection', ADMINS, False, lambda: me.gc()),   # retention:* comes with RepoManagementFullAccess
    ]


@pytest.mark.parametrize('group', [*GROUPS, 'custom'])
def test_lake_operations_as_lakefs_decides(world, group):
    lake, srv, apis, ctx = world
    u, repo, wrong = USERS[group], lake.repository('mxr'), []
    if 'lspare' not in ctx:
        ctx['lspare'] = {}
        repo.write_table('main', 'public/t', pd.DataFrame({'id': [1]})); repo.commit('main', 'a public table')
    for b in ('ld', 'lr', 'lh', 'lm', 'lw'): repo.create_branch(f'{b}-{u}', 'main')
    repo.put(f'lr-{u}', 'staged.txt', b'x'); repo.put(f'lw-{u}', 'del/one.csv', b'1'); repo.commit(f'lw-{u}', 'to delete')
    repo.tag(f'lt-{u}', 'main'); lake.create_repository(f'lx-{u}')
    create_user(lake, f'lgone-{u}'); create_group(lake, f'lgd-{u}')
    create_policy(lake, f'lpd-{u}', [{'effect': 'allow', 'action': ['fs:ReadObject'], 'resource': '*'}])
    ctx['lspare'][u] = create_credentials(lake, u).access_key_id
    if f'target-{u}' not in group_members(lake, f'gx-{u}'): add_member(lake, f'gx-{u}', f'target-{u}')
    if 'FSFullAccess' not in [p['id'] for p in attached_policies(lake, user=f'target-{u}')]: attach_policy(lake, 'FSFullAccess', user=f'target-{u}')
    for name, groups, carol, call in lake_rows(lake, u, ctx):
        expect = carol if group == 'custom' else group in groups
        before = state(lake)
        try: call(); got = True
        except Unauthorized:
            got = False
            after = state(lake)
            assert after == before, f"{group}: the refused '{name}' changed {[t for t in before if before[t] != after[t]]}"
        if got != expect: wrong.append(f"{name}: {'allowed' if got else 'refused'}, lakeFS would {'allow' if expect else 'refuse'} it")
    assert not wrong, f"{group} ({u}):\n" + '\n'.join(wrong)


def test_audit_log_names_who_did_what(world):
    lake, srv, apis, ctx = world
    apis['dev'].objects.upload_object('mxr', 'w-dev', 'incoming/audited.csv', content=PAYLOAD.name)
    apis['ada'].auth.create_user(S.UserCreation(id='audited-user'))
    a = lake.audit(limit=50)
    assert ((a.actor == 'dev') & (a.action == 'put') & (a.ref == 'w-dev')).any()
    row = a[(a.action == 'create_user')].iloc[0]
    assert row.actor == 'ada' and json.loads(row.detail)['user'] == 'audited-user'
    vic, carol = lake.as_user('vic').audit(limit=10_000), lake.as_user('carol').audit(limit=10_000)
    assert 'mxr' in set(vic.repo) and '' not in set(vic.repo)   # a Viewer reads every repository's rows, not access control's
    assert set(carol.repo) == {'mxr'}                           # carol may read one repository
    assert '' in set(lake.as_user('ada').audit(limit=10_000).repo)
