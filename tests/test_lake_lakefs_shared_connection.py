"""Two lakeFS lakes that query through one DuckDB connection each read their own server.

DuckDB holds one file system per protocol, so the `lakefs` file system registered on a connection belongs to one lake at a
time. Lake A registered on a connection, then lake B registered its own there; A used to believe its registration was
still in place and read B's server: the same `lakefs://` URI gave B's rows (or a 404 for a repository only A has)."""
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
    assert b.sql(q, con=con).fetchall() == [(7,)]      # b's file system replaces a's on the connection
    assert a.sql(q, con=con).fetchall() == [(1,), (2,)]  # a registers its own again
    assert sorted(a.repository('shared').table('main', 't', con=con).df().id) == [1, 2]
    assert sorted(b.repository('shared').table('main', 't', con=con).df().id) == [7]
