"""Train from the lake and register in the lake, on every lake backend: the embedded lake, and the lakeFS backend talking to
our lakeFS-API server (and a real lakeFS when LAKEFS_* point at one). Concurrent registrations get distinct versions."""
import os, threading, uuid
import numpy as np, pandas as pd, pytest
from mlinfra_nb.lake import Lake
from mlinfra_nb.lake.lakefs import LakeFSLake
from mlinfra_nb.registry import ModelRegistry
from mlinfra_nb.train import Tracker, tabular_model, train
from mlinfra_nb.workspace import Workspace, import_tensorflow

REAL = all(os.environ.get(k) for k in ('LAKEFS_ENDPOINT', 'LAKEFS_ACCESS_KEY_ID', 'LAKEFS_SECRET_ACCESS_KEY'))

@pytest.fixture(params=['embedded', 'lakefs-ours', pytest.param('lakefs-real', marks=pytest.mark.skipif(not REAL, reason='no real lakeFS configured'))])
def setup(request, tmp_path):
    ws = Workspace(tmp_path/'ws', env={})
    if request.param == 'embedded': lk = Lake(tmp_path/'lake')
    elif request.param == 'lakefs-ours':
        srv, key = request.getfixturevalue('served')
        lk = LakeFSLake(srv.endpoint, key.access_key_id, key.secret_access_key, workspace=ws)
    else: lk = LakeFSLake(workspace=Workspace(tmp_path/'ws', env=dict(os.environ)))
    names = [f'data-{uuid.uuid4().hex[:8]}', f'models-{uuid.uuid4().hex[:8]}']
    repo = lk.create_repository(names[0])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 2)).astype('float32')
    df = pd.DataFrame({'a': x[:, 0], 'b': x[:, 1], 'kind': rng.choice(['p', 'q'], 1500), 'y': (x[:, 0] > x[:, 1]).astype('int64')})
    repo.write_table('main', 'train', df[:1200]); repo.write_table('main', 'valid', df[1200:])
    commit = repo.commit('main', 'data')
    yield lk, repo, ModelRegistry(lk, names[1], workspace=ws), ws, commit
    for n in names:
        if n in lk.repositories(): lk.delete_repository(n)

def test_train_register_load(setup):
    lk, repo, reg, ws, commit = setup
    run = train(tabular_model, (repo, 'main', 'train'), (repo, 'main', 'valid'), features=['a', 'b', 'kind'], label='y', epochs=3, batch_size=32,
                name='tiny', workspace=ws, progress=False)
    assert run.evaluation['auc'] > 0.8
    v = reg.register(run, 'tiny', alias='production')
    assert (v.version, reg.aliases('tiny')) == (1, {'production': 1})
    assert reg.lineage('tiny', alias='production')['data_commits'] == [commit.id]
    tf = import_tensorflow()
    rows = {'a': tf.constant([1.0, -1.0]), 'b': tf.constant([-1.0, 1.0]), 'kind': tf.constant(['p', 'q'])}
    np.testing.assert_allclose(reg.load('tiny', alias='production')(rows).numpy(), run.model(rows).numpy(), rtol=1e-6)
    signature = tf.saved_model.load(str(reg.saved_model('tiny', 1))).signatures['serving_default']
    np.testing.assert_allclose(signature(**rows)['output_0'].numpy(), run.model(rows).numpy(), rtol=1e-6)

def test_concurrent_registrations_get_distinct_versions(setup):
    lk, repo, reg, ws, commit = setup
    run = train(tabular_model, (repo, 'main', 'train'), (repo, 'main', 'valid'), features=['a', 'b'], label='y', epochs=1,
                name='race', workspace=ws, progress=False)
    got, errors = [], []
    def go():
        try: got.append(reg.register(run, 'race').version)
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors, errors
    assert sorted(got) == [1, 2, 3] and reg._versions('race') == [1, 2, 3]
