"""Two lakeFS lakes that query through one DuckDB connection each read their own server.

DuckDB holds one file system per protocol, and a relation reads its files when it runs, through the file system
registered for their protocol then. Lake A registered on a connection, then lake B registered its own there; A used to
believe its registration was still in place and read B's server: the same `lakefs://` URI gave B's rows (or a 404 for a
repository only A has). Then each lake registered its own again before a query, but a relation A had made, run after B
made one, still went to B's server ("No files found"). Now each lake answers to a protocol of its own."""
import contextlib
import pandas as pd, duckdb, pytest
from mlinfra_nb.lake.core import Lake
from mlinfra_nb.lake.lakefs import LakeFSLake
from mlinfra_nb.lake.server import LakeServer, create_credentials
from mlinfra_nb.workspace import Workspace

@pytest.fixture
def two_lakes(tmp_path):
    "Two lakeFS lakes, each on a server of its own, each with a repository 'shared' whose table holds other rows."
    with contextlib.ExitStack() as stack:
        out = []
        for name, ids in (('a', [1, 2]), ('b', [7])):
            served = Lake(tmp_path/name/'lake'); key = create_credentials(served, 'tests')
            srv = stack.enter_context(LakeServer(served)); stack.callback(served.store.close)
            lk = LakeFSLake(srv.endpoint, key.access_key_id, key.secret_access_key,
                            workspace=Workspace(tmp_path/name/'home', env={}))
            repo = lk.create_repository('shared')
            repo.write_table('main', 't', pd.DataFrame({'id': ids})); repo.commit('main', f'{name} rows')
            out.append(lk)
        yield out

def test_each_lake_reads_its_own_server_through_a_shared_connection(two_lakes):
    a, b = two_lakes
    con = duckdb.connect()
    q = "SELECT id FROM 'lakefs://shared/main/t' ORDER BY id"
    assert a.sql(q, con=con).fetchall() == [(1,), (2,)]
    assert b.sql(q, con=con).fetchall() == [(7,)]
    assert a.sql(q, con=con).fetchall() == [(1,), (2,)]
    assert sorted(a.repository('shared').table('main', 't', con=con).df().id) == [1, 2]
    assert sorted(b.repository('shared').table('main', 't', con=con).df().id) == [7]

def test_relations_made_in_turn_run_in_any_order(two_lakes):
    "A relation runs through its own lake's server however the lakes' relations were made and run in between."
    a, b = two_lakes
    con = duckdb.connect()
    ra = a.repository('shared').table('main', 't', con=con)
    rb = b.repository('shared').table('main', 't', con=con)
    qa = a.sql("SELECT count(*) AS n FROM 'lakefs://shared/main/t'", con=con)
    assert sorted(ra.df().id) == [1, 2] and sorted(rb.df().id) == [7] and qa.fetchall() == [(2,)]
    assert sorted(ra.df().id) == [1, 2]                                      # again, after b's ran

def test_threads_share_a_connection(two_lakes):
    "Two threads, one lake each, make and run relations on one connection at once; each sees only its own rows."
    import threading
    a, b = two_lakes
    con, errors, wrong = duckdb.connect(), [], []
    def work(lake, want):
        try:
            for _ in range(20):
                rel = lake.repository('shared').table('main', 't', con=con.cursor())
                if sorted(rel.df().id) != want: wrong.append((lake, sorted(rel.df().id)))
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=work, args=(a, [1, 2])), threading.Thread(target=work, args=(b, [7]))]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors and not wrong, (errors, wrong)
