"Every bad input to the embedded lake gets a clear error from the MlinfraError hierarchy, and nothing is written."
import hashlib, re
from pathlib import Path
import pytest
from mlinfra_nb.lake.core import Lake
from mlinfra_nb.workspace import Conflict, Corrupted, InvalidInput, MlinfraError, NotFound, PermissionDenied, PreconditionFailed


def snapshot(lake:Lake)->tuple:
    "Everything a failed operation must leave as it was: audit log, repositories, refs, staging, protection, files on disk."
    with lake.session(): return _snapshot(lake)

def _snapshot(lake:Lake)->tuple:
    repos = {}
    for name in lake.repositories():
        r = lake.repository(name)
        branches = r.branches(show_hidden=True)   # hidden transaction branches too
        repos[name] = (branches, r.tags(), {b: r.uncommitted(b) for b in branches}, r.protection_rules())
    files = sorted((str(p.relative_to(lake.root)), p.stat().st_size) for d in ('objects', 'packs') for p in (lake.root/d).rglob('*') if p.is_file())
    return len(lake.audit(limit=10**9)), repos, files


def populate(repo):
    "main with two commits and a tag, 'dev' with staged changes, a protected 'release-1'."
    repo.put_many('main', {'data/a.csv': b'a,b\n1,2\n', 'data/b.csv': b'x\n', 'README': b'hello'}); repo.commit('main', 'first')
    repo.put('main', 'data/c.csv', b'c\n'); repo.commit('main', 'second', metadata={'k': 'v'})
    repo.tag('v1', 'main')
    repo.create_branch('dev', 'main'); repo.put('dev', 'data/new.csv', b'new\n'); repo.delete('dev', 'data/b.csv')
    repo.create_branch('release-1', 'main'); repo.protect('release-*')
    return repo

@pytest.fixture
def world(lake, repo):
    "A populated repository of its own, for tests that change it."
    return populate(repo)

@pytest.fixture(scope='module')
def shared(tmp_path_factory):
    "(lake, repository) populated once, for tests where every operation must be refused (each checks nothing changed)."
    lk = Lake(tmp_path_factory.mktemp('shared')/'lake', user='tester')
    populate(lk.create_repository('demo'))
    yield lk, lk.repository('demo')
    lk.store.close()


def refused(lake, fn, exc, msg, check=True):
    "Run `fn`, expect `exc` with `msg` (a regex) in its message, and (unless `check` is False) check that nothing changed."
    before = snapshot(lake) if check else None
    with pytest.raises(exc, match=msg) as e: fn()
    assert isinstance(e.value, MlinfraError)
    if check: assert snapshot(lake) == before, 'a refused operation changed the lake'
    return e.value

# --- names --------------------------------------------------------------------------------------

REPO_MSG = "invalid repository name {}: use 3-63 lowercase letters, digits and '-', starting with a letter or digit"

@pytest.mark.parametrize('name', ['AB', 'ab', 'Abc', 'a_b_c', '-abc', 'abc/def', 'abc def', '', 'x' * 64, None, 42, 'näme',
                                  'abc\n'])
def test_invalid_repository_name(shared, name):
    lake, world = shared
    refused(lake, lambda: lake.create_repository(name), InvalidInput, re.escape(REPO_MSG.format(repr(name))))

def test_duplicate_repository(lake, repo):
    refused(lake, lambda: lake.create_repository('demo'), Conflict, r"repository 'demo' already exists")
    assert lake.create_repository('demo', exist_ok=True) == repo

def test_unknown_repository(shared):
    lake, world = shared
    refused(lake, lambda: lake.repository('nope'), NotFound, r"no repository 'nope'; create it with lake.create_repository\('nope'\)")

BAD_REFS = ['bad name', 'a/b', '', '-x', '../x', 'x' * 257, 'ü', 'a.b', 'a~1', 'a@', None, 7]

@pytest.mark.parametrize('name', BAD_REFS + ['feat\n'])
def test_invalid_branch_name(shared, name):
    lake, world = shared
    refused(lake, lambda: world.create_branch(name, 'main'), InvalidInput, re.escape(f"invalid branch name {name!r}: use letters, digits, '_' and '-'"))

def test_invalid_default_branch_name(shared):
    lake, world = shared
    refused(lake, lambda: lake.create_repository('other', default_branch='my branch'), InvalidInput, r"invalid branch name 'my branch'")

@pytest.mark.parametrize('name', [n for n in BAD_REFS if n not in ('ü', 'a.b')] + ['v1\n', 'v1..2', 'v1.lock', 'v1.'])
def test_invalid_tag_name(shared, name):
    lake, world = shared
    refused(lake, lambda: world.tag(name, 'main'), InvalidInput, re.escape(f"invalid tag name {name!r}: no spaces, '..', '/'"))

def test_tag_names_follow_git(repo):
    "Tags follow git's (and lakeFS's) rules, so release numbers work."
    repo.put('main', 'x', b'x'); repo.commit('main', 'x')
    for name in ('v1.2.0', 'ü', 'release_2026-11'): repo.tag(name, 'main')
    assert set(repo.tags()) == {'v1.2.0', 'ü', 'release_2026-11'}
    assert repo.get('v1.2.0', 'x') == b'x' and not repo.exists('v1.2.0~1', 'x')

@pytest.mark.parametrize('name', ['main', 'dev', 'v1'])
def test_branch_or_tag_name_taken(shared, name):
    lake, world = shared
    refused(lake, lambda: world.create_branch(name, 'main'), Conflict, rf"a branch or tag named '{name}' already exists in repository 'demo'")
    refused(lake, lambda: world.tag(name, 'main'), Conflict, rf"a branch or tag named '{name}' already exists in repository 'demo'")

# --- unknown and malformed refs -----------------------------------------------------------------

UNKNOWN = r"no branch, tag or commit '{}' in repository 'demo'"

@pytest.mark.parametrize('op', [
    lambda r: r.get('nope', 'README'), lambda r: r.stat('nope', 'README'), lambda r: r.exists('nope', 'README'),
    lambda r: r.list('nope'), lambda r: r.log('nope'), lambda r: r.diff('main', 'nope'), lambda r: r.diff('nope', 'main'),
    lambda r: r.create_branch('x', 'nope'), lambda r: r.tag('t', 'nope'), lambda r: r.merge('nope', into='dev'),
    lambda r: r.hard_reset('dev', 'nope'), lambda r: r.revert('main', 'nope'), lambda r: r.merge_base('main', 'nope'),
    lambda r: r.commit_info('nope'), lambda r: r.get('nope@', 'README'), lambda r: r.get('nope~1', 'README'),
])
def test_unknown_ref(shared, op):
    lake, world = shared
    refused(lake, lambda: op(world), NotFound, UNKNOWN.format('nope'))

def test_unknown_commit_id(shared):
    lake, world = shared
    refused(lake, lambda: world.get('deadbeef00', 'README'), NotFound, UNKNOWN.format('deadbeef00'))

@pytest.mark.parametrize('ref, msg', [('main~3', r"'main~3': commit [0-9a-f]{12} has no parent"),
                                      ('main^2', r"'main\^2': commit [0-9a-f]{12} has 1 parent\(s\), not 2")])
def test_ref_past_history(shared, ref, msg):
    lake, world = shared
    refused(lake, lambda: world.get(ref, 'README'), NotFound, msg)

@pytest.mark.parametrize('ref', ['', '~1', 'main@@', 'ma@in', None, 3, b'main'])
def test_malformed_ref(shared, ref):
    lake, world = shared
    refused(lake, lambda: world.get(ref, 'README'), InvalidInput, re.escape(f"invalid ref {ref!r}: expected a branch, tag or commit id"))

@pytest.mark.parametrize('op, msg', [
    (lambda r: r.put('nope', 'x', b'1'), "no branch 'nope' in repository 'demo'"),
    (lambda r: r.put('v1', 'x', b'1'), "no branch 'v1' in repository 'demo'"),          # a tag is not writable
    (lambda r: r.commit('nope', 'm'), "no branch 'nope' in repository 'demo'"),
    (lambda r: r.delete('nope', 'README'), "no branch 'nope' in repository 'demo'"),
    (lambda r: r.reset('nope'), "no branch 'nope' in repository 'demo'"),
    (lambda r: r.merge('dev', into='v1'), "no branch 'v1' in repository 'demo'"),
    (lambda r: r.delete_branch('nope'), "no branch 'nope' in repository 'demo'"),
    (lambda r: r.uncommitted('nope'), "no branch 'nope' in repository 'demo'"),
    (lambda r: r.delete_tag('nope'), "no tag 'nope' in repository 'demo'"),
    (lambda r: r.unprotect('nope'), "no protection rule 'nope' in repository 'demo'"),
    (lambda r: r.delete('dev', 'no/such'), "no object 'no/such' on branch 'dev' of 'demo'"),
    (lambda r: r.get('main', 'no/such'), "no object 'no/such' at 'main' in repository 'demo'"),
    (lambda r: r.get('dev', 'data/b.csv'), "no object 'data/b.csv' at 'dev' in repository 'demo'"),   # deleted in staging
])
def test_unknown_branch_tag_or_object(shared, op, msg):
    lake, world = shared
    refused(lake, lambda: op(world), NotFound, re.escape(msg))

# --- paths ----------------------------------------------------------------------------------------

BAD_PATHS = [
    ('..', "empty, '.' and '..' segments are not allowed"), ('../etc/passwd', "empty, '.' and '..' segments are not allowed"),
    ('data/../../x', "empty, '.' and '..' segments are not allowed"), ('a/..', "empty, '.' and '..' segments are not allowed"),
    ('./a', "empty, '.' and '..' segments are not allowed"), ('a/./b', "empty, '.' and '..' segments are not allowed"),
    ('a//b', "empty, '.' and '..' segments are not allowed"), ('a/', "empty, '.' and '..' segments are not allowed"),
    ('/etc/passwd', 'absolute paths are not allowed; use a path relative to the repository'),
    ('/', 'absolute paths are not allowed'), ('a\x00b', 'it contains a NUL byte'), ('\x00', 'it contains a NUL byte'),
    ('', 'it must be a non-empty string'), (None, 'it must be a non-empty string'), (b'a', 'it must be a non-empty string'),
    (5, 'it must be a non-empty string'), ('x' * 1025, 'longer than 1024 bytes'), ('é' * 513, 'longer than 1024 bytes'),
]

@pytest.mark.parametrize('path, msg', BAD_PATHS, ids=[repr(p)[:20] for p, _ in BAD_PATHS])
def test_bad_path(shared, path, msg):
    lake, world = shared
    calls = {'put': lambda: world.put('dev', path, b'data'),
             'put_many': lambda: world.put_many('dev', {'ok/first': b'1', path: b'data', 'ok/last': b'2'}),  # none of the batch is written
             'get': lambda: world.get('dev', path), 'get@': lambda: world.get('main@', path), 'stat': lambda: world.stat('main', path),
             'exists': lambda: world.exists('main', path), 'delete': lambda: world.delete('dev', path)}
    if path is not None and path != 'a/': calls['reset'] = lambda: world.reset('dev', path=path)   # reset(path=None) means everything; 'a/' is accepted (lakeFS)
    before = snapshot(lake)
    for op, call in calls.items():
        e = refused(lake, call, InvalidInput, re.escape(msg), check=False)
        assert str(e).startswith('invalid path '), (op, str(e))
    assert snapshot(lake) == before, 'a refused operation changed the lake'

def test_long_path_limit_is_in_bytes(lake, world):
    world.put('dev', 'x' * 1024, b'fits'); world.put('dev', 'é' * 512, b'fits')
    assert world.get('dev', 'x' * 1024) == b'fits'

# --- payloads and metadata ------------------------------------------------------------------------

@pytest.mark.parametrize('data', ['text', None, 12, 1.5, [1, 2], {'a': b'1'}, Path('README')], ids=lambda d: type(d).__name__)
def test_non_bytes_payload(shared, data):
    lake, world = shared
    refused(lake, lambda: world.put('dev', 'x', data), InvalidInput, re.escape(f"object 'x': content must be bytes, got {type(data).__name__}"))
    refused(lake, lambda: world.put_many('dev', [('ok', b'1'), ('x', data)]), InvalidInput, re.escape("object 'x': content must be bytes"))

def test_bytes_like_payloads_are_accepted(lake, world):
    world.put_many('dev', {'ba': bytearray(b'ba'), 'mv': memoryview(b'mv'), 'empty': b''})
    assert [world.get('dev', p) for p in ('ba', 'mv', 'empty')] == [b'ba', b'mv', b'']

@pytest.mark.parametrize('md', [{'a': 1}, {1: 'a'}, {'a': None}, {'a': b'x'}], ids=str)
def test_bad_metadata(shared, md):
    lake, world = shared
    msg = re.escape('metadata must map strings to strings; got')
    refused(lake, lambda: world.put('dev', 'x', b'1', metadata=md), InvalidInput, msg)
    refused(lake, lambda: world.commit('dev', 'm', metadata=md), InvalidInput, msg)
    refused(lake, lambda: world.merge('dev', into='main', metadata=md), InvalidInput, msg)

def test_bad_content_type(lake, world):
    refused(lake, lambda: world.put('dev', 'x', b'orphan bytes', content_type=123), InvalidInput, 'content_type')

def test_negative_list_limit(shared):
    lake, world = shared
    refused(lake, lambda: world.list('main', limit=-1), InvalidInput, 'limit')

# --- commits --------------------------------------------------------------------------------------

def test_empty_commit_refused_unless_allowed(lake, world):
    refused(lake, lambda: world.commit('main', 'nothing'), InvalidInput,
            re.escape("nothing to commit on branch 'main' (pass allow_empty=True for an empty commit)"))
    world.put('main', 'README', b'hello')   # staged, but the same object as committed: still nothing to commit
    refused(lake, lambda: world.commit('main', 'same'), InvalidInput, "nothing to commit on branch 'main'")
    head = world.head('main')
    c = world.commit('main', 'empty on purpose', allow_empty=True)
    assert c.parents == (head.id,) and c.metarange == head.metarange

@pytest.mark.parametrize('msg', ['', '   ', '\n', None, 5])
def test_commit_needs_a_message(shared, msg):
    lake, world = shared
    refused(lake, lambda: world.commit('dev', msg), InvalidInput, 'a commit needs a non-empty message')

def test_reset_path_and_prefix_together(shared):
    lake, world = shared
    refused(lake, lambda: world.reset('dev', path='data/new.csv', prefix='data/'), InvalidInput, 'give path or prefix, not both')

def test_cannot_delete_default_branch(shared):
    lake, world = shared
    refused(lake, lambda: world.delete_branch('main'), PermissionDenied, "cannot delete repository default branch: cannot delete 'main': it is the default branch of 'demo'")

# --- protected branches ---------------------------------------------------------------------------

@pytest.mark.parametrize('op, action', [
    (lambda r: r.put('main', 'x', b'1'), 'write'), (lambda r: r.put_many('main', {'x': b'1', 'y': b'2'}), 'write'),
    (lambda r: r.delete('main', 'README'), 'delete objects'), (lambda r: r.commit('main', 'direct'), 'commit'),
    (lambda r: r.commit('main', 'direct', allow_empty=True), 'commit'), (lambda r: r.reset('main'), 'reset'),
    (lambda r: r.reset('main', path='staged'), 'reset'), (lambda r: r.hard_reset('main', 'main~1'), 'hard-reset'),
])
def test_protected_branch_refuses_direct_changes(lake, world, op, action):
    world.put('main', 'staged', b'staged before protection')   # so commit and reset would have something to act on
    world.protect('main')
    refused(lake, lambda: op(world), PermissionDenied,
            re.escape(f"cannot {action} on branch 'main': it is protected by rule 'main'; work on another branch and merge"))
    assert world.get('main', 'staged') == b'staged before protection'

@pytest.mark.parametrize('op, action', [
    (lambda r: r.put('release-1', 'x', b'1'), 'write'), (lambda r: r.delete_branch('release-1'), 'delete'),
    (lambda r: r.hard_reset('release-1', 'main~1'), 'hard-reset'), (lambda r: r.delete('release-1', 'README'), 'delete objects'),
])
def test_protection_by_glob(shared, op, action):
    lake, world = shared
    refused(lake, lambda: op(world), PermissionDenied, re.escape(f"cannot {action} on branch 'release-1': it is protected by rule 'release-*'"))

def test_protected_branch_still_takes_merges_and_reverts(lake, world):
    "As in lakeFS: only merges (and reverts) change a protected branch."
    world.protect('main')
    world.commit('dev', 'dev work')
    m = world.merge('dev', into='main')
    assert world.head('main').id == m.id and world.get('main', 'data/new.csv') == b'new\n'
    world.revert('main', m.id, parent=1)
    assert not world.exists('main', 'data/new.csv') and world.get('main', 'data/b.csv') == b'x\n'

@pytest.mark.parametrize('pattern', ['', None, 3])
def test_bad_protection_pattern(shared, pattern):
    lake, world = shared
    refused(lake, lambda: world.protect(pattern), InvalidInput, re.escape(f'invalid protection pattern {pattern!r}'))

# --- a corrupt object on disk ---------------------------------------------------------------------

def test_corrupt_object_is_reported_and_nothing_changes(lake, world):
    data = b'standalone, to be damaged ' * 40
    world.put('dev', 'damaged.bin', data); world.commit('dev', 'add damaged')
    addr = hashlib.sha256(data).hexdigest()
    f = lake.root/'objects'/addr[:2]/addr
    b = bytearray(f.read_bytes()); b[-1] ^= 1; f.write_bytes(bytes(b))
    e = refused(lake, lambda: world.get('dev', 'damaged.bin'), Corrupted,
                re.escape(f"object demo/dev/damaged.bin is corrupt: its content no longer matches its hash {addr[:12]}"))
    assert str(f) in str(e)
    assert world.stat('dev', 'damaged.bin').size == len(data)   # the catalog is fine; other objects still read
    assert world.get('dev', 'README') == b'hello'

# --- hooks ----------------------------------------------------------------------------------------

def test_pre_commit_hook_veto_leaves_branch_and_staging(lake, world):
    seen = []
    def no_deletes(ev):
        seen.append(ev)
        if any(c.type == 'removed' for c in ev.changes): raise ValueError('deleting data is not allowed')
    def never(ev): return False
    world.add_hook('pre-commit', no_deletes, branches='dev')
    refused(lake, lambda: world.commit('dev', 'drop b'), PreconditionFailed,
            re.escape("pre-commit hook 'no_deletes' rejected the commit to 'dev': deleting data is not allowed"))
    assert seen[0].branch == 'dev' and seen[0].message == 'drop b' and {(c.type, c.path) for c in seen[0].changes} == {('removed', 'data/b.csv'), ('added', 'data/new.csv')}
    world.add_hook('pre-commit', never, branches='rel*', name='gate')
    world.create_branch('rel2', 'main'); world.put('rel2', 'x', b'1')
    refused(lake, lambda: world.commit('rel2', 'x'), PreconditionFailed, re.escape("pre-commit hook 'gate' rejected the commit to 'rel2'"))
    world.reset('dev', path='data/b.csv'); world.commit('dev', 'only adds')   # hooks that do not match, or accept, let it through

def test_pre_merge_hook_veto_leaves_destination(lake, world):
    world.commit('dev', 'dev work')
    world.add_hook('pre-merge', lambda ev: ev.source != 'dev', branches='main', name='not-from-dev')
    refused(lake, lambda: world.merge('dev', into='main'), PreconditionFailed, re.escape("pre-merge hook 'not-from-dev' rejected the merge to 'main'"))

@pytest.mark.parametrize('args, msg', [(('post-commit', print), "unknown hook type 'post-commit'; choose one of pre-commit, pre-merge"),
                                       (('pre-commit', 'not callable'), 'hook must be callable')])
def test_bad_hook(shared, args, msg):
    lake, world = shared
    refused(lake, lambda: world.add_hook(*args), InvalidInput, re.escape(msg))
    assert lake.hooks == []

# --- merges ---------------------------------------------------------------------------------------

@pytest.fixture
def diverged(world):
    world.commit('dev', 'dev work')
    world.create_branch('other', 'main')
    world.put_many('other', {'data/a.csv': b'other a', 'data/c.csv': b'other c', 'same': b'same', 'only-other': b'o'}); world.commit('other', 'other')
    world.put_many('dev', {'data/a.csv': b'dev a', 'data/c.csv': b'dev c', 'same': b'same', 'only-dev': b'd'}); world.commit('dev', 'dev')
    return world

def test_merge_conflict_lists_paths_and_leaves_destination(lake, diverged):
    refused(lake, lambda: diverged.merge('other', into='dev'), Conflict,
            re.escape("merge of 'other' into 'dev' has 2 conflict(s): data/a.csv, data/c.csv; resolve them or pass strategy='source-wins' or 'dest-wins'"))
    m = diverged.merge('other', into='dev', strategy='dest-wins')
    assert diverged.get('dev', 'data/a.csv') == b'dev a' and diverged.get('dev', 'only-other') == b'o' and len(m.parents) == 2

def test_merge_conflict_message_is_bounded(lake, world):
    world.create_branch('x', 'main'); world.create_branch('y', 'main')
    world.put_many('x', {f'f/{i:02d}': b'x%d' % i for i in range(25)}); world.commit('x', 'x')
    world.put_many('y', {f'f/{i:02d}': b'y%d' % i for i in range(25)}); world.commit('y', 'y')
    e = refused(lake, lambda: world.merge('x', into='y'), Conflict, r"has 25 conflict\(s\): f/00, f/01, .*f/19 and 5 more; resolve them")
    assert 'f/20' not in str(e)

@pytest.mark.parametrize('op, exc, msg', [
    (lambda r: r.merge('other', into='dev', strategy='ours'), InvalidInput, "unknown merge strategy 'ours'; choose one of source-wins, dest-wins"),
    (lambda r: r.merge('main', into='dev'), InvalidInput, "nothing to merge: 'main' is already contained in 'dev'"),
    (lambda r: r.merge('v1', into='dev'), InvalidInput, "nothing to merge: 'v1' is already contained in 'dev'"),
])
def test_bad_merge(lake, diverged, op, exc, msg):
    refused(lake, lambda: op(diverged), exc, re.escape(msg))

def test_merge_into_branch_with_staging(lake, diverged):
    diverged.put('dev', 'wip', b'wip')
    refused(lake, lambda: diverged.merge('other', into='dev', strategy='source-wins'), InvalidInput,   # lakeFS: 400, a dirty branch
            re.escape("branch 'dev' has uncommitted changes; commit or reset them before merging into it"))

def test_bad_revert(lake, diverged):
    m = diverged.merge('other', into='dev', strategy='source-wins')
    refused(lake, lambda: diverged.revert('dev', m.id), Conflict, re.escape(f"{m.id!r} is a merge commit: say which parent to revert against (parent=1 or 2)"))
    refused(lake, lambda: diverged.revert('dev', m.id, parent=3), InvalidInput, re.escape(f"{m.id!r} has no parent 3"))
    root = diverged.log('main')[-1].id
    refused(lake, lambda: diverged.revert('dev', root), InvalidInput, re.escape(f"cannot revert {root!r}: it has no parent"))
    diverged.put('dev', 'wip', b'wip')
    refused(lake, lambda: diverged.revert('dev', 'dev~1', parent=1), InvalidInput, re.escape("branch 'dev' has uncommitted changes"))
