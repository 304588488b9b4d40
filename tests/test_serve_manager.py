"""The model manager of the local server (`mlinfra_nb.serve.models.ModelManager`) against the behaviour of TensorFlow
Serving's own manager: how often the config file and the version folders are polled, which folders are versions, which
SavedModels load, how labels follow config reloads, how failed loads are retried, and how warmup is replayed.

Each case says which part of TF Serving it follows. The tiny models are built here (Keras 3 `model.export`,
`tf.saved_model.save` of a `tf.Module`) into `<base>/<name>/<version>/`.
"""
from __future__ import annotations
import inspect, time
from pathlib import Path

import numpy as np
import pytest

from mlinfra_nb.workspace import import_tensorflow
from mlinfra_nb.serve.config import model_config, server_config, write_text_proto
from mlinfra_nb.serve.models import ModelManager

tf = import_tensorflow()
keras = tf.keras


# --- models and helpers ------------------------------------------------------------------------------------------------

def export_keras(path:Path, offset:float):
    "Keras 3 `model.export`: x float32 [n] -> x + offset (one output, `output_0`); the offset tells versions apart."
    x = keras.Input((), name='x')
    keras.Model(x, keras.layers.Lambda(lambda t: t + offset)(x)).export(str(path), verbose=False)

def predict(mgr:ModelManager, name:str, x, version:int|None=None, label:str|None=None, signature:str='serving_default'):
    "The first output of `signature` of the servable addressed, for float32 `x`."
    with mgr.using(name, version, label) as s:
        out = s.run(signature, {next(iter(s.inputs(signature))): np.asarray(x, np.float32)})
    return next(iter(out.values())).tolist()

def wait_for(cond, timeout:float=30, every:float=0.05):
    "Wait until `cond()` is true; fail with what it last returned."
    deadline = time.monotonic() + timeout
    while not (got := cond()) and time.monotonic() < deadline: time.sleep(every)
    assert got, f"still not true after {timeout}s"
    return got

@pytest.fixture
def base(tmp_path):
    return tmp_path/'models'


# --- the constructor and the polls -------------------------------------------------------------------------------------

def test_constructor_names_and_defaults_follow_tf_serving_flags(base):
    "The keyword names the CLI wires its flags to, with TF Serving's defaults, each kept as an attribute of the same name."
    params = inspect.signature(ModelManager).parameters
    assert list(params)[:4] == ['config', 'config_file', 'poll_seconds', 'warmup']
    defaults = {'config_poll_seconds': None, 'load_retries': 5, 'retry_interval': 60.0, 'allow_unavailable_labels': False,
                'warmup_iterations': 1}
    for k, v in defaults.items():
        assert params[k].kind is inspect.Parameter.KEYWORD_ONLY and params[k].default == v, k
    export_keras(base/'m'/'1', 1.0)
    mgr = ModelManager(server_config(model_config('m', base/'m', 'latest')), None, 0, False, config_poll_seconds=3,
                       load_retries=2, retry_interval=0.5, allow_unavailable_labels=True, warmup_iterations=4)
    got = {k: getattr(mgr, k) for k in ['poll_seconds', 'warmup', *defaults]}
    assert got == {'poll_seconds': 0, 'warmup': False, 'config_poll_seconds': 3, 'load_retries': 2, 'retry_interval': 0.5,
                   'allow_unavailable_labels': True, 'warmup_iterations': 4}
    mgr.close()

def test_config_read_once_when_config_poll_seconds_is_zero(base, tmp_path):
    "--model_config_file_poll_wait_seconds=0: the file is read once at start; the folders are still rescanned every poll."
    export_keras(base/'m'/'1', 1.0)
    cfg = tmp_path/'models.config'
    write_text_proto(server_config(model_config('m', base/'m', 'latest')), cfg)
    mgr = ModelManager(config_file=cfg, poll_seconds=0.05, config_poll_seconds=0)
    try:
        write_text_proto(server_config(model_config('m', base/'m', [1])), cfg)     # never read: version 2 still wins
        export_keras(base/'m'/'2', 2.0)
        wait_for(lambda: mgr.status_all()['m'].get(2) == 'AVAILABLE')
        assert predict(mgr, 'm', [1.0]) == [3.0]
    finally: mgr.close()

def test_config_file_and_folders_polled_at_their_own_rates(base, tmp_path):
    "A slow config poll and a fast folder poll: a new folder shows up before an edit of the file is read."
    export_keras(base/'m'/'1', 1.0)
    cfg = tmp_path/'models.config'
    write_text_proto(server_config(model_config('m', base/'m', 'all')), cfg)
    mgr = ModelManager(config_file=cfg, poll_seconds=0.05, config_poll_seconds=0.6)
    try:
        write_text_proto(server_config(model_config('m', base/'m', 'all', labels={'stable': 1})), cfg)
        export_keras(base/'m'/'2', 2.0)
        wait_for(lambda: mgr.status_all()['m'].get(2) == 'AVAILABLE')
        assert mgr.labels['m'] == {}, "the file was read before its interval"
        wait_for(lambda: mgr.labels['m'] == {'stable': 1})
    finally: mgr.close()

def test_config_file_polled_without_folder_poll(base, tmp_path):
    "poll_seconds=0 with config_poll_seconds>0: the file is still re-read (and applied) at its interval."
    export_keras(base/'m'/'1', 1.0); export_keras(base/'m'/'2', 2.0)
    cfg = tmp_path/'models.config'
    write_text_proto(server_config(model_config('m', base/'m', [1])), cfg)
    mgr = ModelManager(config_file=cfg, poll_seconds=0, config_poll_seconds=0.05)
    try:
        write_text_proto(server_config(model_config('m', base/'m', [2])), cfg)
        wait_for(lambda: mgr.status_all()['m'] == {1: 'END', 2: 'AVAILABLE'})
    finally: mgr.close()
