"""Two real worker processes on 127.0.0.1 train one model with MultiWorkerMirroredStrategy through `train()`.

Each worker reads its own shard of a lake table; gradients are all-reduced over gRPC between the processes. Both must finish
and end with the same weights, and only the chief records a run. Only the chief keeps the training state, so early stopping
and resuming must reach the other worker too: both stop at the same epoch, both resume from the chief's checkpoint."""
import json, os, socket, subprocess, sys, textwrap
import numpy as np, pandas as pd, pytest
from mlinfra_nb.lake import Lake
from mlinfra_nb.train.tracking import Tracker
from mlinfra_nb.workspace import Workspace

WORKER = textwrap.dedent("""
    import json, sys, numpy as np
    from mlinfra_nb.lake import Lake
    from mlinfra_nb.train import train
    from mlinfra_nb.workspace import MlinfraError, Workspace, import_tensorflow
    lake_dir, ws_dir, out = sys.argv[1:4]
    opts = {'epochs': 3, 'patience': None, 'lr': 0.1, 'valid': 'valid', 'fail_at': None, 'resume': False, **json.loads(sys.argv[4])}
    keras = import_tensorflow().keras
    built, epochs_run = [], []
    class Watch(keras.callbacks.Callback):   # runs after train's own callback, so the epoch is checkpointed when it raises
        def on_epoch_end(self, epoch, logs=None):
            epochs_run.append(epoch)
            if epoch == opts['fail_at']: raise RuntimeError('pre-empted')
    def build(ds):
        inputs = {c: keras.Input((), name=c) for c in ('x0', 'x1', 'x2', 'x3')}
        x = keras.layers.Concatenate()([keras.layers.Reshape((1,))(v) for v in inputs.values()])
        out = keras.layers.Dense(1, activation='sigmoid')(keras.layers.Dense(8, activation='relu')(x))
        m = keras.Model(inputs, out); m.compile(keras.optimizers.SGD(opts['lr']), 'binary_crossentropy')
        built.append(m); return m
    repo = Lake(lake_dir).repository('multi')
    try:
        run = train(build, (repo, 'main', 'train'), (repo, 'main', opts['valid']), features=['x0', 'x1', 'x2', 'x3'], label='y',
                    epochs=opts['epochs'], batch_size=64, patience=opts['patience'], name='mw', workspace=Workspace(ws_dir, env={}),
                    progress=False, resume=opts['resume'], callbacks=[Watch()])
    except (RuntimeError, MlinfraError) as e:
        print(json.dumps({'failed': str(e), 'error': type(e).__name__, 'epochs_run': epochs_run})); sys.exit(0)
    np.savez(out, *built[0].get_weights())   # every worker holds the model; its weights are what must agree
    print(json.dumps({'run': run.id if run else None, 'evaluation': run.evaluation if run else None, 'epochs_run': epochs_run}))
""")

def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture
def lake_dir(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 4)).astype('float32')
    y = (x @ np.array([1.5, -2.0, 0.5, 1.0]) + rng.normal(scale=0.3, size=3000) > 0).astype('int64')
    df = pd.DataFrame(x, columns=['x0', 'x1', 'x2', 'x3']).assign(y=y)
    repo = Lake(tmp_path/'lake').create_repository('multi')
    repo.write_table('main', 'train', df[:2400]); repo.write_table('main', 'valid', df[2400:])
    repo.write_table('main', 'flipped', df[2400:].assign(y=1 - df.y[2400:]))   # labels inverted: the better training, the worse
    repo.commit('main', 'data')
    return tmp_path/'lake'

def two_workers(tmp_path, lake_dir, timeout:int|None=None, **opts)->list:
    "Run the worker script on two workers of a fresh cluster; each one's last line of output, chief first."
    (tmp_path/'worker.py').write_text(WORKER)
    ports = [free_port(), free_port()]
    cluster = {'worker': [f'127.0.0.1:{p}' for p in ports]}
    procs = []
    for i in range(2):
        env = {**os.environ, 'TF_CONFIG': json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': i}}),
               'TF_CPP_MIN_LOG_LEVEL': '2', 'CUDA_VISIBLE_DEVICES': ''}
        procs.append(subprocess.Popen([sys.executable, str(tmp_path/'worker.py'), str(lake_dir), str(tmp_path/'ws'), str(tmp_path/f'w{i}.npz'),
                                       json.dumps(opts)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout or int(os.environ.get('MW_TIMEOUT', 300)))
            assert p.returncode == 0, err[-3000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None: p.kill()   # by pid, never by name
    return outs

def same_weights(tmp_path):
    w0, w1 = np.load(tmp_path/'w0.npz'), np.load(tmp_path/'w1.npz')
    assert len(w0.files) == len(w1.files) == 4
    for k in w0.files: np.testing.assert_array_equal(w0[k], w1[k])   # all-reduced updates: identical, not just close

def test_two_workers_agree(tmp_path, lake_dir):
    chief, other = two_workers(tmp_path, lake_dir)
    assert chief['run'] and other['run'] is None               # only worker 0 (the chief) records
    same_weights(tmp_path)
    run = Tracker(Workspace(tmp_path/'ws', env={})).run(chief['run'])
    assert run.status == 'finished' and run.strategy['kind'] == 'multi_worker' and run.strategy['replicas'] == 2
    assert list(run.history().index) == [0, 1, 2]
    assert run.history()['loss'].iloc[-1] < run.history()['loss'].iloc[0]   # it learned
    assert chief['evaluation']['loss'] < 0.5

def test_early_stopping_stops_every_worker(tmp_path, lake_dir):
    # validation labels inverted: val_loss is best after epoch 1 and worse after, so patience=2 stops after epoch 3 of 8
    chief, other = two_workers(tmp_path, lake_dir, epochs=8, patience=2, lr=0.5, valid='flipped')
    assert chief['epochs_run'] == other['epochs_run'] == [0, 1, 2]       # both stopped at the same epoch (else one would hang)
    same_weights(tmp_path)                                                # both restored the best epoch's weights
    run = Tracker(Workspace(tmp_path/'ws', env={})).run(chief['run'])
    h = run.history()
    assert list(h.index) == [0, 1, 2] and h.val_loss.idxmin() == 0
    assert abs(run.evaluation['loss'] - h.val_loss.iloc[0]) < 1e-4        # evaluated with the best epoch's weights, not the last

def test_resume_on_every_worker(tmp_path, lake_dir):
    cut = two_workers(tmp_path, lake_dir, epochs=4, fail_at=1)
    assert [o['failed'] for o in cut] == ['pre-empted'] * 2 and [o['epochs_run'] for o in cut] == [[0, 1]] * 2
    chief, other = two_workers(tmp_path, lake_dir, epochs=4, resume=True)
    assert chief['epochs_run'] == other['epochs_run'] == [2, 3]           # both from the chief's checkpoint, not from 0
    same_weights(tmp_path)
    run = Tracker(Workspace(tmp_path/'ws', env={})).run(chief['run'])
    assert (run.status, run.attempts, list(run.history().index)) == ('finished', 2, [0, 1, 2, 3])

def test_a_chief_that_fails_before_training_stops_every_worker(tmp_path, lake_dir):
    "Resuming a run that does not exist fails on the chief alone; the other worker must stop too, not wait for it."
    chief, other = two_workers(tmp_path, lake_dir, timeout=240, resume='r-does-not-exist')
    assert chief['error'] == 'NotFound' and 'r-does-not-exist' in chief['failed'] and chief['epochs_run'] == []
    assert other == {'failed': "the chief worker failed before training (its log says why); this worker stops with it",
                     'error': 'MlinfraError', 'epochs_run': []}
