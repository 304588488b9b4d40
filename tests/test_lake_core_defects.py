"The defects a second reader of `lake.core` and `lake.tree` found, each stated as the behaviour that must hold."
import copy
from pathlib import Path
import pytest
from mlinfra_nb.lake.core import Lake
from mlinfra_nb.lake.tree import make_entry
from mlinfra_nb.workspace import Conflict, InvalidInput, MlinfraError, NotFound, PermissionDenied, PreconditionFailed, Workspace


class Refuses:
    "A principal that may do nothing."
    user = 'bob'
    def require(self, action, resource): raise PermissionDenied(f"bob may not {action} on {resource}")
    def everywhere(self, action): return False
    def may(self, action, resource): return False
    def visible(self, action, names): return []

@pytest.fixture
def owner(tmp_path): return Lake(tmp_path/'owner', user='ada')

def test_guarded_operation_does_not_lift_checks_on_another_lake(owner, tmp_path):
    other = Lake(tmp_path/'other', user='ada')
    secret = other.create_repository('secrets'); secret.put('main', 'plan.txt', b'top secret'); secret.commit('main', 'plan')
    bob = copy.copy(other); bob.principal = Refuses()
    seen = []
    def peek(ev): seen.append(bob.repository('secrets').get('main', 'plan.txt'))
    repo = owner.create_repository('data'); repo.add_hook('pre-commit', peek)
    repo.put('main', 'a', b'1')
    with pytest.raises(PreconditionFailed, match='may not'): repo.commit('main', 'add a')
    assert seen == []
    with pytest.raises(PermissionDenied): bob.repository('secrets').get('main', 'plan.txt')

def test_same_lake_inside_operation_still_skips_checks(owner):
    "What one operation does on its own behalf is not checked again (the outer check covers it)."
    repo = owner.create_repository('data'); repo.put('main', 'a', b'1')
    assert repo.commit('main', 'add a').message == 'add a'

def test_hook_opening_second_lake_on_same_root_fails_fast(owner):
    repo = owner.create_repository('data'); repo.put('main', 'a', b'1')
    def reopen(ev): Lake(owner.root).repository('data').head('main')
    repo.add_hook('pre-commit', reopen)
    with pytest.raises(PreconditionFailed, match='ev.repository'): repo.commit('main', 'add a')
    assert repo.uncommitted('main')   # nothing committed, nothing lost

def test_transaction_refuses_dirty_target_before_running_block(owner):
    repo = owner.create_repository('data'); repo.put('main', 'a', b'1')
    ran = []
    with pytest.raises(InvalidInput, match='dirty branch'):
        with repo.transaction('main', 'tx') as b: ran.append(1); b.put('b', b'2')
    assert ran == [] and repo.branches(show_hidden=True).keys() == {'main'}

def test_abandoned_transaction_leaves_no_hidden_row(owner):
    import mlinfra_nb.lake.core as core
    repo = owner.create_repository('data')
    repo._start_transaction('tx-main-0000dead', 'main')
    with owner.store.transaction() as con: con.execute("UPDATE transactions SET pid = 999999999, started_at = started_at - INTERVAL 2 HOUR")
    assert owner.gc()['transactions'] == ['data/tx-main-0000dead']
    assert 'tx-main-0000dead' not in repo.branches(show_hidden=True)
    repo.create_branch('tx-main-0000dead')
    assert 'tx-main-0000dead' in repo.branches()

def test_delete_repository_clears_transactions(owner):
    repo = owner.create_repository('data'); repo._start_transaction('tx-main-1', 'main')
    owner.delete_repository('data')
    with owner.store.connect() as con: assert con.execute("SELECT count(*) FROM transactions WHERE repo = 'data'").fetchone()[0] == 0

SHORT_HEADS = ['', 'a', 'abcdef', 'abcdef01234', 'ABCDEF012345', 12]   # too short to name a commit, or not a hex string

def refuses_short_and_moved_heads(repo)->str:
    "Stage a change on main, check that short `expected_head`s and another commit's prefix are refused; return main's head."
    h = repo.head('main').id
    repo.put('main', 'a', b'1')
    for short in SHORT_HEADS + [h[:1], h[:11]]:
        with pytest.raises(InvalidInput, match='at least 12 hex characters'): repo.commit('main', 'x', expected_head=short)
    other = '0' * 64 if not h.startswith('0') else 'f' * 64
    with pytest.raises(Conflict, match="branch 'main' moved"): repo.commit('main', 'x', expected_head=other[:12])
    return h

def test_expected_head_needs_twelve_characters(owner):
    "`expected_head` is a full commit id or a prefix of at least 12 hex characters: a shorter one would match almost any head."
    repo = owner.create_repository('data'); h = refuses_short_and_moved_heads(repo)
    assert repo.uncommitted('main')                                    # nothing committed by the refusals
    assert repo.commit('main', 'x', expected_head=h[:12]).parents == (h,)
    repo.put('main', 'b', b'2'); h = repo.head('main').id
    assert repo.commit('main', 'y', expected_head=h).parents == (h,)

def test_lakefs_expected_head_agrees_with_the_embedded_lake(served, tmp_path):
    "The lakeFS backend refuses the same short `expected_head`s, before any request, and still detects a moved branch."
    from mlinfra_nb.lake.lakefs import LakeFSLake
    srv, key = served
    lk = LakeFSLake(srv.endpoint, key.access_key_id, key.secret_access_key, workspace=Workspace(tmp_path/'ws', env={}))
    if 'heads' in lk.repositories(): lk.delete_repository('heads')
    repo = lk.create_repository('heads'); h = refuses_short_and_moved_heads(repo)
    assert repo.head('main').id == h and [c.path for c in repo.uncommitted('main')] == ['a']
    assert repo.commit('main', 'x', expected_head=h[:12]).parents == (h,)

def test_root_and_key_read_no_workspace_settings(tmp_path, monkeypatch):
    "Given `root` and `key`, a Lake opens whatever the workspace settings say; without `key` it still takes the settings' key."
    from mlinfra_nb.lake.store import generate_key
    k1, k2 = generate_key(), generate_key()
    monkeypatch.setenv('MLINFRA_CONFIG', str(tmp_path/'missing.toml'))                  # settings that cannot be read
    with pytest.raises(NotFound, match='MLINFRA_CONFIG names'): Lake(tmp_path/'lake')  # no key: the settings are needed
    lake = Lake(tmp_path/'lake', user='ada', key=k2)
    lake.create_repository('data').put('main', 'a', b'secret'); lake.store.close()
    monkeypatch.delenv('MLINFRA_CONFIG'); monkeypatch.setenv('MLINFRA_HOME', str(tmp_path/'home'))
    monkeypatch.setenv('MLINFRA_LAKE__KEY', k1)                                      # another lake's key in the settings
    with pytest.raises(InvalidInput, match='wrong key for the lake'): Lake(tmp_path/'lake')
    assert Lake(tmp_path/'lake', key=k2).repository('data').get('main', 'a') == b'secret'   # the key given wins
    monkeypatch.setenv('MLINFRA_LAKE__KEY', k2)
    assert Lake(tmp_path/'lake').repository('data').get('main', 'a') == b'secret'           # no key given: the settings' key
    assert not (tmp_path/'home').exists()                                            # and no workspace folder made for it

def test_revert_parent_zero_is_refused(owner):
    repo = owner.create_repository('data'); repo.put('main', 'a', b'1'); c = repo.commit('main', 'a')
    with pytest.raises(InvalidInput, match='parent'): repo.revert('main', c.id, parent=0)
    assert repo.revert('main', c.id, parent=1).parents == (c.id,)

def test_make_entry_keeps_mtime_zero():
    assert make_entry('a', 'ab' * 32, 1, None, {}, 0).mtime == 0

@pytest.mark.parametrize('ct', ['text/csv\x00x', 'a\nb', 'x\x1f'])
def test_control_characters_in_content_type_refused(owner, ct):
    repo = owner.create_repository('data')
    with pytest.raises(InvalidInput, match='content_type'): repo.put('main', 'a', b'1', content_type=ct)
    with pytest.raises(InvalidInput, match='content_type'): repo.put_many('main', {'a': b'1'}, content_type=ct)
    assert repo.uncommitted('main') == []

def test_metadata_with_control_characters_keeps_range_ids_apart(owner):
    "Entry metadata enters the range id as JSON, which escapes control characters: two different values never hash alike."
    repo = owner.create_repository('data')
    repo.put('main', 'a', b'1', metadata={'k': 'v\n'}); c1 = repo.commit('main', 'one')
    repo.put('main', 'a', b'1', metadata={'k': 'v'}); c2 = repo.commit('main', 'two')
    assert c1.metarange != c2.metarange and repo.stat(c1.id, 'a').metadata == {'k': 'v\n'}

def test_range_with_missing_rows_is_an_error(owner):
    from mlinfra_nb.lake.tree import range_entries, tree_ranges
    repo = owner.create_repository('data'); repo.put_many('main', {'a': b'1', 'b': b'2'}); c = repo.commit('main', 'ab')
    with owner.store.transaction() as con:
        seq = tree_ranges(con, c.metarange)[0].seq
        con.execute("DELETE FROM ranges WHERE seq = ?", [seq]); owner.store.caches.clear()
    with owner.store.connect() as con:
        with pytest.raises(MlinfraError, match='0 rows'): range_entries(con, tree_ranges(con, c.metarange)[0])
    with pytest.raises(MlinfraError, match='0 rows'): repo.get('main', 'a')

def test_put_many_counts_distinct_paths(owner):
    repo = owner.create_repository('data')
    assert repo.put_many('main', [('z', b'1'), ('z', b'2')]) == 1
    assert repo.get('main', 'z') == b'2' and len(repo.uncommitted('main')) == 1

def test_tree_with_missing_chunk_is_an_error(owner):
    from mlinfra_nb.lake.tree import tree_ranges
    repo = owner.create_repository('data'); repo.put('main', 'a', b'1'); c = repo.commit('main', 'a')
    with owner.store.transaction() as con: con.execute("DELETE FROM metachunks"); owner.store.caches.clear()
    with owner.store.connect() as con:
        with pytest.raises(MlinfraError, match='missing from the catalog'): tree_ranges(con, c.metarange)
