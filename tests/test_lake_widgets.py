"LakeBrowser driven as a person would: set widget values, click buttons, then check the widgets and the lake."
import ipywidgets as W
import pytest
from mlinfra_nb.datasets import transactions
from mlinfra_nb.lake.core import Lake
from mlinfra_nb.lake.widgets import LakeBrowser, html_table, render_listing

@pytest.fixture
def lk(tmp_path):
    "A lake with repository `cards`: a table and a README on `main` (tagged `v1`); branch `dev` with more rows, five amounts corrected and a new column."
    lake = Lake(tmp_path/'lake', user='ada')
    repo = lake.create_repository('cards')
    tx = transactions(600, seed=0)
    repo.write_table('main', 'tables/tx', tx[tx.transaction_id <= 400])
    repo.put('main', 'docs/README.md', b'# cards\n')
    repo.commit('main', 'first rows')
    repo.tag('v1', 'main')
    repo.create_branch('dev', 'main')
    fixed = tx.copy()
    fixed.loc[fixed.transaction_id <= 5, 'amount'] += 1.0
    repo.write_table('dev', 'tables/tx', fixed.assign(reviewed=False))
    repo.commit('dev', 'all rows, five corrected, a new column')
    yield lake
    lake.store.close()

@pytest.fixture
def cards(lk): return lk.repository('cards')

def status(b, where:str|None=None):
    "The message under control `where` (a key of `b.notes`: 'branch', 'merge', ...), or the status line at the top."
    return (b.notes[where] if where else b.status).value

def is_error(b, where:str|None=None): return '#b00020' in status(b, where)

# --- pickers and views

def test_pickers_list_repositories_branches_and_tags(lk, cards):
    lk.create_repository('other', default_branch='trunk').create_branch('x', 'trunk')
    b = LakeBrowser(lk)
    assert b.repo_picker.options == ('cards', 'other')
    assert (b.repo.name, b.ref) == ('cards', 'main')
    assert b.ref_picker.options == (('dev', 'dev'), ('main', 'main'), ('v1 (tag)', 'v1'))
    b.repo_picker.value = 'other'
    assert (b.ref, [v for _, v in b.ref_picker.options]) == ('trunk', ['trunk', 'x'])
    # x has nothing trunk lacks, so there is nothing to offer: no merge, and the button is off
    assert b.merge_source.options == () and b.merge_source.value is None and b.merge_button.disabled
    lk.repository('other').put('x', 'f.txt', b'x'); lk.repository('other').commit('x', 'on x'); b.refresh()
    assert [v for _, v in b.merge_source.options] == ['x'] and b.merge_source.value == 'x' and not b.merge_button.disabled
    assert b.table_picker.options == () and 'no tables' in b.tables_html.value
    b.repo_picker.value = 'cards'
    assert b.ref == 'main' and 'first rows' in b.log_html.value

def test_start_on_a_repository(lk):
    lk.create_repository('other')
    assert LakeBrowser(lk, repo='other').repo.name == 'other'
    with pytest.raises(Exception, match="no repository 'nope'"): LakeBrowser(lk, repo='nope')

def test_empty_lake(tmp_path):
    b = LakeBrowser(Lake(tmp_path/'empty', user='ada'))
    assert (b.repo, b.ref, b.repo_picker.options) == (None, None, ())
    assert 'no repositories yet' in status(b)
    b.refresh_button.click()
    assert 'no repositories yet' in status(b)

def test_log_view(lk, cards):
    b = LakeBrowser(lk)
    b.ref_picker.value = 'dev'
    log = cards.log('dev')
    assert b.log_html.value.count('<tr>') == 1 + len(log) == 4
    for c in log: assert c.id[:12] in b.log_html.value
    assert 'ada' in b.log_html.value and 'all rows, five corrected' in b.log_html.value
    b.ref_picker.value = 'v1'
    assert 'five corrected' not in b.log_html.value and 'first rows' in b.log_html.value

def test_prefix_navigation(lk, cards):
    cards.put('main', 'docs/img/logo.png', b'\x89PNG'); cards.commit('main', 'logo')
    b = LakeBrowser(lk)
    assert [v for _, v in b.folder_picker.options] == ['docs/', 'tables/']
    assert b.listing_html.value.count('>folder<') == 2 and b.up_button.disabled
    b.folder_picker.value = 'docs/'
    assert b.prefix.value == 'docs/' and not b.up_button.disabled
    assert [l for l, _ in b.folder_picker.options] == ['img/']
    assert '>README.md<' in b.listing_html.value and '>8 B<' in b.listing_html.value
    b.folder_picker.value = 'docs/img/'
    assert '>logo.png<' in b.listing_html.value and '>README.md<' not in b.listing_html.value
    b.up_button.click(); assert b.prefix.value == 'docs/'
    b.up_button.click(); assert b.prefix.value == ''
    b.prefix.value = 'tables/tx/'
    assert '_table.json' in b.listing_html.value and 'part-' in b.listing_html.value
    b.prefix.value = 'nothing/'
    assert "nothing under 'nothing/'" in b.listing_html.value
    b.prefix.value = 'docs/'; b.ref_picker.value = 'v1'   # the prefix is kept across refs
    assert '>README.md<' in b.listing_html.value and '>img/<' not in b.listing_html.value

def test_listing_escapes_names(lk, cards):
    cards.put('main', 'docs/<script>.txt', b'x'); cards.commit('main', 'odd name')
    b = LakeBrowser(lk); b.prefix.value = 'docs/'
    assert '&lt;script&gt;.txt' in b.listing_html.value and '<script>' not in b.listing_html.value

def test_listing_limit(lk):
    b = LakeBrowser(lk); b.listing_limit = 1; b.refresh()
    assert 'only the first 1 entries' in b.listing_html.value
    assert 'only the first' not in render_listing([], '') and html_table(['a'], []) == '<i>nothing to show</i>'

def test_tables_and_preview(lk, cards):
    b = LakeBrowser(lk)
    assert b.table_picker.options == ('tables/tx',)
    assert '>400<' in b.tables_html.value and '>7<' in b.tables_html.value   # rows, columns
    assert 'first 10 of 400 rows' in b.preview_html.value
    assert b.preview_html.value.count('<tr>') == 11 and '>transaction_id<' in b.preview_html.value
    b.ref_picker.value = 'dev'
    assert '>600<' in b.tables_html.value and '>8<' in b.tables_html.value and 'reviewed bool' in b.tables_html.value
    assert 'first 10 of 600 rows' in b.preview_html.value and '>reviewed<' in b.preview_html.value
    b.preview_rows = 3; b.show_preview()
    assert b.preview_html.value.count('<tr>') == 4
    cards.write_table('dev', 'tables/labels', transactions(20, seed=1)[['transaction_id', 'is_fraud']])
    b.refresh_button.click()
    assert b.table_picker.options == ('tables/labels', 'tables/tx') and b.table_picker.value == 'tables/tx'
    b.table_picker.value = 'tables/labels'
    assert 'first 3 of 20 rows' in b.preview_html.value and '>merchant_id<' not in b.preview_html.value

# --- diffs

def test_object_diff(lk, cards):
    b = LakeBrowser(lk); b.ref_picker.value = 'dev'
    assert (b.diff_left.value, b.diff_right.value) == ('main', 'dev')
    b.diff_button.click()
    h = b.diff_html.value
    assert '<b>main &rarr; dev</b>' in h and '1 added, 1 removed, 1 changed' in h and 'tables/tx/_table.json' in h
    b.diff_left.value, b.diff_right.value = 'dev', 'main'
    assert b.diff_html.value == ''   # stale results are cleared when a side changes
    b.diff_button.click()
    assert '<b>dev &rarr; main</b>' in b.diff_html.value
    b.diff_right.value = 'dev'; b.diff_button.click()
    assert 'no changes' in b.diff_html.value

def test_object_diff_sees_staged_changes(lk, cards):
    cards.put('dev', 'docs/NOTES.md', b'wip')
    b = LakeBrowser(lk); b.ref_picker.value = 'dev'
    b.diff_button.click()   # main to dev, staging included
    assert '2 added, 1 removed, 1 changed' in b.diff_html.value and 'docs/NOTES.md' in b.diff_html.value
    b.diff_left.value = 'main'; b.diff_right.value = 'v1'; b.diff_button.click()
    assert 'no changes' in b.diff_html.value

def test_table_diff_with_and_without_key(lk, cards):
    b = LakeBrowser(lk); b.ref_picker.value = 'dev'
    assert b.diff_table.options == ('tables/tx',)
    keys = [v for _, v in b.diff_key.options]
    assert keys[0] == '' and 'transaction_id' in keys and 'reviewed' not in keys   # only columns both sides share
    b.table_diff_button.click()
    h = b.table_diff_html.value
    assert "<td" in h and '>added<' in h and '>reviewed<' in h and '>bool<' in h   # the schema change
    assert 'rows: 205 added, 5 removed, 0 changed' in h
    b.diff_key.value = 'transaction_id'; b.table_diff_button.click()
    h = b.table_diff_html.value
    assert 'rows: 200 added, 0 removed, 5 changed' in h and '>amount_old<' in h and '>amount_new<' in h
    assert '(first 5)' in h
    b.diff_rows = 2; b.table_diff_button.click()
    assert b.table_diff_html.value.count('(first 2)') == 2

def test_table_diff_needs_a_table_on_both_sides(lk, cards):
    cards.write_table('dev', 'tables/new', transactions(5, seed=0))
    b = LakeBrowser(lk); b.ref_picker.value = 'dev'
    assert b.diff_table.options == ('tables/tx',)   # tables/new is only on one side
    cards.delete('main', 'tables/tx/_table.json')   # the table leaves main (staged)
    b.diff_left.value = 'v1'; b.diff_left.value = 'main'
    assert b.diff_table.options == () and b.diff_key.options == (('(no key)', ''),)
    b.table_diff_button.click()
    assert is_error(b, 'table_diff') and 'pick a table that exists on both sides' in status(b, 'table_diff') and status(b) == ''

# --- branches and commits

def test_create_branch(lk, cards):
    b = LakeBrowser(lk); b.ref_picker.value = 'v1'
    b.new_branch_name.value = ' from-tag '; b.create_branch_button.click()
    assert cards.branches()['from-tag'] == cards.tags()['v1']
    assert (b.ref, b.new_branch_name.value) == ('from-tag', '')
    assert "created branch 'from-tag' from 'v1'" in status(b, 'branch') and not is_error(b, 'branch')
    assert 'from-tag' in [v for _, v in b.merge_source.options] + [v for _, v in b.diff_left.options]

def test_create_branch_errors_are_shown(lk, cards):
    b = LakeBrowser(lk)
    before = cards.branches()
    b.new_branch_name.value = 'bad name'; b.create_branch_button.click()
    assert is_error(b, 'branch') and "invalid branch name 'bad name'" in status(b, 'branch')
    assert status(b) == '' and status(b, 'commit') == status(b, 'merge') == ''   # under the form that caused it, nowhere else
    assert b.new_branch_name.value == 'bad name'   # kept, to be corrected
    b.new_branch_name.value = ''; b.create_branch_button.click()
    assert "invalid branch name ''" in status(b, 'branch')
    b.new_branch_name.value = 'v1'; b.create_branch_button.click()
    assert "a branch or tag named 'v1' already exists" in status(b, 'branch')
    assert cards.branches() == before and b.ref == 'main'

def test_commit_with_and_without_message(lk, cards):
    b = LakeBrowser(lk); b.ref_picker.value = 'dev'
    assert "0 uncommitted change(s) on 'dev'" in b.uncommitted_html.value
    b.commit_message.value = 'nothing yet'; b.commit_button.click()
    assert "nothing to commit on branch 'dev'" in status(b, 'commit')
    cards.put('dev', 'docs/NOTES.md', b'notes'); cards.delete('dev', 'docs/README.md')
    b.refresh_button.click()
    assert "2 uncommitted change(s) on 'dev'" in b.uncommitted_html.value and 'docs/NOTES.md' in b.uncommitted_html.value
    head = cards.head('dev').id
    b.commit_message.value = '   '; b.commit_button.click()
    assert is_error(b, 'commit') and 'a commit needs a non-empty message' in status(b, 'commit')
    assert cards.head('dev').id == head and len(cards.uncommitted('dev')) == 2
    b.commit_message.value = 'notes instead of a README'; b.commit_button.click()
    c = cards.head('dev')
    assert c.message == 'notes instead of a README' and c.committer == 'ada' and c.parents == (head,)
    assert f"committed {c.id[:12]} on 'dev'" in status(b, 'commit') and not is_error(b, 'commit')
    assert b.commit_message.value == '' and "0 uncommitted change(s)" in b.uncommitted_html.value
    assert 'notes instead of a README' in b.log_html.value
    assert cards.uncommitted('dev') == []

def test_tags_cannot_be_changed(lk, cards):
    b = LakeBrowser(lk); b.ref_picker.value = 'v1'
    assert b.commit_button.disabled and b.merge_button.disabled and b.delete_branch_button.disabled
    assert "'v1' is a tag" in b.uncommitted_html.value
    b.commit_message.value = 'x'; b.commit_button.click()
    assert "cannot commit on 'v1': it is a tag" in status(b, 'commit')
    b.merge_button.click()
    assert "cannot merge into 'v1'" in status(b, 'merge') and b.pending is None
    b.delete_branch_button.click()
    assert "cannot delete 'v1'" in status(b, 'delete') and b.pending is None and 'v1' in cards.tags()
    b.ref_picker.value = 'main'
    assert not (b.commit_button.disabled or b.merge_button.disabled or b.delete_branch_button.disabled)

def test_protected_branch_errors_are_shown(lk, cards):
    cards.put('main', 'docs/wip.txt', b'wip'); cards.protect('main')
    b = LakeBrowser(lk)
    b.commit_message.value = 'try'; b.commit_button.click()
    assert is_error(b, 'commit') and "cannot commit on branch 'main': it is protected" in status(b, 'commit')
    cards.protect('dev')
    b.ref_picker.value = 'dev'; b.delete_branch_button.click(); b.confirm_button.click()
    assert "cannot delete on branch 'dev': it is protected" in status(b, 'delete') and 'dev' in cards.branches()

# --- merges and deletes ask first

def test_merge_waits_for_confirmation(lk, cards):
    cards.create_branch('hotfix', 'main'); cards.put('hotfix', 'docs/fix.txt', b'fix'); cards.commit('hotfix', 'fix')
    b = LakeBrowser(lk)
    head, dev = cards.head('main').id, cards.head('dev').id
    assert b.merge_source.value == 'dev' and b.confirm_box.layout.display == 'none'
    b.merge_button.click()
    assert b.pending == "Merge 'dev' into branch 'main' (refusing conflicts)?"
    assert b.confirm_box.layout.display is None and 'Merge' in b.confirm_html.value
    assert cards.head('main').id == head
    b.merge_source.value = 'hotfix'   # what is merged was fixed when the question was asked
    b.confirm_button.click()
    assert cards.head('main').parents == (head, dev)   # a merge commit, as lakeFS makes
    assert "merged 'dev' into 'main'" in status(b, 'merge') and b.pending is None and b.confirm_box.layout.display == 'none'
    assert 'five corrected' in b.log_html.value and '>600<' in b.tables_html.value

def test_merge_cancel(lk, cards):
    b = LakeBrowser(lk); head = cards.head('main').id
    b.merge_button.click(); b.cancel_button.click()
    assert (b.pending, b.confirm_box.layout.display, cards.head('main').id) == (None, 'none', head)
    assert 'cancelled' in status(b, 'merge')
    b.confirm_button.click()   # nothing is pending any more
    assert cards.head('main').id == head

def test_changing_the_selection_drops_the_question(lk, cards):
    lk.create_repository('other')
    b = LakeBrowser(lk); head = cards.head('main').id
    b.merge_button.click(); b.ref_picker.value = 'dev'
    assert b.pending is None and 'cancelled: the selection changed' in status(b, 'merge')
    b.ref_picker.value = 'main'; b.merge_button.click(); b.repo_picker.value = 'other'
    assert b.pending is None
    b.confirm_button.click()
    assert cards.head('main').id == head

def test_merge_conflict_is_shown_then_resolved_with_a_strategy(lk, cards):
    cards.put('main', 'docs/README.md', b'main'); cards.commit('main', 'main edit')
    cards.put('dev', 'docs/README.md', b'dev'); cards.commit('dev', 'dev edit')
    b = LakeBrowser(lk); head = cards.head('main').id
    b.merge_source.value = 'dev'; b.merge_button.click(); b.confirm_button.click()
    assert is_error(b, 'merge') and "merge of 'dev' into 'main' has 1 conflict(s): docs/README.md" in status(b, 'merge') and status(b) == ''
    assert cards.head('main').id == head
    b.merge_strategy.value = 'dest-wins'; b.merge_button.click()
    assert b.pending == "Merge 'dev' into branch 'main' (dest-wins)?"
    b.confirm_button.click()
    assert cards.get('main', 'docs/README.md') == b'main' and cards.head('main').parents == (head, cards.head('dev').id)
    assert cards.table_info('main', 'tables/tx').rows == 600
    assert "Merge 'dev' into 'main'" in b.log_html.value

def test_merge_into_dirty_branch_and_nothing_to_merge(lk, cards):
    b = LakeBrowser(lk)
    offered = [v for _, v in b.merge_source.options]
    assert 'v1' not in offered and 'main' not in offered and offered == ['dev']   # contained in main, main itself: not offered
    cards.put('main', 'docs/wip.txt', b'wip'); b.refresh()
    b.merge_source.value = 'dev'; b.merge_button.click(); b.confirm_button.click()
    assert "branch 'main' has uncommitted changes" in status(b, 'merge') and cards.get('main', 'docs/README.md') == b'# cards\n'

def test_delete_branch_confirm_and_cancel(lk, cards):
    cards.put('dev', 'docs/wip.txt', b'wip')
    b = LakeBrowser(lk); b.ref_picker.value = 'dev'
    b.delete_branch_button.click()
    assert b.pending == "Delete branch 'dev' and its 1 uncommitted change(s)?"
    b.cancel_button.click()
    assert 'dev' in cards.branches() and b.ref == 'dev'
    b.delete_branch_button.click(); b.confirm_button.click()
    assert 'dev' not in cards.branches() and "deleted branch 'dev'" in status(b, 'delete')
    assert b.ref == 'main' and 'dev' not in [v for _, v in b.ref_picker.options + b.merge_source.options + b.diff_left.options]

def test_default_branch_cannot_be_deleted(lk, cards):
    b = LakeBrowser(lk)
    b.delete_branch_button.click(); b.confirm_button.click()
    assert is_error(b, 'delete') and "cannot delete 'main': it is the default branch" in status(b, 'delete') and 'main' in cards.branches()

# --- the lake changing elsewhere

def test_errors_from_a_stale_view_are_shown_not_raised(lk, cards):
    b = LakeBrowser(lk); b.ref_picker.value = 'dev'
    cards.delete_branch('dev')   # by someone else
    b.diff_button.click()
    assert is_error(b, 'diff') and "no branch, tag or commit 'dev'" in status(b, 'diff')
    b.commit_message.value = 'x'; b.commit_button.click()
    assert "no branch 'dev'" in status(b, 'commit')
    b.refresh_button.click()
    assert b.ref == 'main' and 'dev' not in [v for _, v in b.ref_picker.options]

def test_a_note_is_cleared_by_its_next_action_and_by_a_new_selection(lk):
    b = LakeBrowser(lk)
    b.new_branch_name.value = 'bad name'; b.create_branch_button.click()
    assert is_error(b, 'branch')
    b.diff_button.click()                                   # another control: its own note, the branch form's stays
    assert is_error(b, 'branch') and status(b, 'diff') == '' and 'main &rarr; main' in b.diff_html.value
    b.new_branch_name.value = 'good'; b.create_branch_button.click()
    assert not is_error(b, 'branch') and "created branch 'good'" in status(b, 'branch')
    b.commit_button.click(); assert is_error(b, 'commit')
    b.ref_picker.value = 'main'                             # a new selection: the notes about the old one go
    assert all(n.value == '' for n in b.notes.values())

def test_notes_sit_under_their_controls_and_are_short(lk, cards):
    b = LakeBrowser(lk)
    actions = b.tabs.children[4].children
    for button, note in ((b.commit_button, 'commit'), (b.create_branch_button, 'branch'), (b.merge_button, 'merge'), (b.delete_branch_button, 'delete')):
        above = actions[actions.index(b.notes[note]) - 1]
        assert button is above or button in getattr(above, 'children', ()), (note, above)
    assert b.confirm_box in actions and b.confirm_box not in b.widget.children    # the question is asked under the actions
    for i in range(30): cards.put('main', f'docs/{i:02}.md', b'main')
    cards.commit('main', 'thirty docs')
    for i in range(30): cards.put('dev', f'docs/{i:02}.md', b'dev')
    cards.commit('dev', 'thirty docs, differently')
    b.refresh(); b.merge_source.value = 'dev'; b.merge_button.click(); b.confirm_button.click()
    shown = status(b, 'merge')
    assert is_error(b, 'merge') and 'has 30 conflict(s)' in shown and '\n' not in shown
    text = shown.split('>', 1)[1].rsplit('<', 1)[0]          # what is shown; the whole message is the title, on hover
    assert len(text) <= 160 and text.endswith('…') and 'title="merge of' in shown, shown

def test_displays_as_a_vbox_with_tabs(lk):
    b = LakeBrowser(lk)
    assert isinstance(b.widget, W.VBox) and b.tabs in b.widget.children and b.status in b.widget.children
    assert b.tabs.titles == ('Log', 'Objects', 'Tables', 'Diff', 'Actions')
    shown = []
    import mlinfra_nb.lake.widgets as m
    orig, m.display = m.display, shown.append
    try: b._ipython_display_()
    finally: m.display = orig
    assert shown == [b.widget]
