"""Training killed with SIGKILL mid-run resumes from its last checkpoint and ends where an uninterrupted run ends."""
import json, os, signal, subprocess, sys, textwrap, time
import numpy as np, pandas as pd, pytest
from mlinfra_nb.lake import Lake
from mlinfra_nb.train.tracking import Tracker
from mlinfra_nb.workspace import Workspace

TRAINER = textwrap.dedent("""
    import json, sys, time, numpy as np
    from mlinfra_nb.lake import Lake
    from mlinfra_nb.train import train
    from mlinfra_nb.workspace import Workspace, import_tensorflow
    lake_dir, ws_dir, name, out, pause = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
    keras = import_tensorflow().keras
    keras.utils.set_random_seed(0)
    seen = []
    class Slow(keras.callbacks.Callback):   # long epochs, so the kill lands in the middle of training
        def on_epoch_begin(self, epoch, logs=None): seen.append(epoch)
        def on_epoch_end(self, epoch, logs=None): time.sleep(pause)
    def build(ds):
        inputs = {c: keras.Input((), name=c) for c in ('x0', 'x1', 'x2')}
        x = keras.layers.Concatenate()([keras.layers.Reshape((1,))(v) for v in inputs.values()])
        m = keras.Model(inputs, keras.layers.Dense(1, activation='sigmoid')(keras.layers.Dense(8, activation='relu')(x)))
        m.compile(keras.optimizers.Adam(0.01), 'binary_crossentropy')
        return m
    repo = Lake(lake_dir).repository('resume')
    run = train(build, (repo, 'main', 'train'), (repo, 'main', 'valid'), features=['x0', 'x1', 'x2'], label='y', epochs=6,
                patience=None, name=name, workspace=Workspace(ws_dir, env={}), progress=False, resume=True, callbacks=[Slow()])
    np.savez(out, *run.model.get_weights())
    print(json.dumps({'run': run.id, 'epochs_run': seen}))
""")

@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 3)).astype('float32')
    df = pd.DataFrame(x, columns=['x0', 'x1', 'x2']).assign(y=(x.sum(1) > 0).astype('int64'))
    repo = Lake(tmp_path/'lake').create_repository('resume')
    repo.write_table('main', 'train', df[:1600]); repo.write_table('main', 'valid', df[1600:]); repo.commit('main', 'data')
    (tmp_path/'trainer.py').write_text(TRAINER)
    return tmp_path

def trainer(tmp, name, out, pause, **kw):
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'CUDA_VISIBLE_DEVICES': '', 'TF_DETERMINISTIC_OPS': '1'}
    return subprocess.Popen([sys.executable, str(tmp/'trainer.py'), str(tmp/'lake'), str(tmp/'ws'), name, str(tmp/out), str(pause)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)

def finish(p)->dict:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])

def test_kill_and_resume(setup):
    tmp = setup
    straight = finish(trainer(tmp, 'straight', 'straight.npz', 0))      # the same training, never interrupted
    p = trainer(tmp, 'killed', 'killed.npz', 1.5)
    tracker = Tracker(Workspace(tmp/'ws', env={}))
    deadline, state = time.monotonic() + 240, None
    while time.monotonic() < deadline:                                 # wait for the checkpoint of epoch 2, then kill -9
        runs = tracker.runs(name='killed')
        f = tmp/'ws'/'runs'/runs.id.iloc[-1]/'checkpoints'/'state.json' if len(runs) else None
        if f is not None and f.exists() and json.loads(f.read_text())['epochs_done'] >= 2: break
        assert p.poll() is None, p.communicate()[1][-3000:]
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    run = tracker.run(runs.id.iloc[-1])
    state = json.loads(f.read_text())
    assert run.status == 'running' and 2 <= state['epochs_done'] < 6           # killed, not finished, and mid-way
    assert (f.parent/state['last_weights']).exists()                        # the checkpoint it names is whole
    assert (f.parent/state['best_weights']).exists()                   # and so is the best epoch's
    assert state['epochs_done'] <= len(run.history()) <= state['epochs_done'] + 1  # every checkpointed epoch was recorded (a kill between
                                                                       # recording the next epoch and its checkpoint leaves it; resume rewrites it)

    again = finish(trainer(tmp, 'killed', 'killed.npz', 0))
    assert again['run'] == run.id                                      # the same run, continued
    assert again['epochs_run'] == list(range(state['epochs_done'], 6))       # from the epoch after the checkpoint, not from 0
    run = tracker.run(run.id)
    assert (run.status, run.attempts, list(run.history().index)) == ('finished', 2, [0, 1, 2, 3, 4, 5])
    assert not list(f.parent.glob('.*'))                           # no half-written files left behind
    a, b = np.load(tmp/'straight.npz'), np.load(tmp/'killed.npz')
    for k in a.files: np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)   # weights and optimizer state carried over
