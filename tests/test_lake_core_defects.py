"The defects a second reader of `lake.core` and `lake.tree` found, each stated as the behaviour that must hold."
import copy
from pathlib import Path
import pytest
from mlinfra_nb.lake.core import Lake
from mlinfra_nb.lake.tree import make_entry
from mlinfra_nb.workspace import Conflict, InvalidInput, MlinfraError, NotFound, PermissionDenied, PreconditionFailed


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

def test_expected_head_needs_six_characters(owner):
    repo = owner.create_repository('data'); h = repo.head('main').id
    repo.put('main', 'a', b'1')
    with pytest.raises(InvalidInput, match='expected_head'): repo.commit('main', 'x', expected_head=h[:1])
    other = '0' * 64 if not h.startswith('0') else 'f' * 64
    with pytest.raises(Conflict): repo.commit('main', 'x', expected_head=other[:8])
    assert repo.commit('main', 'x', expected_head=h[:6]).parents == (h,)

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
