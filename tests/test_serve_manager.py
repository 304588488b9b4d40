"""The model manager of the local server (`mlinfra_nb.serve.models.ModelManager`) against the behaviour of TensorFlow
Serving's own manager and model server: how often the config file and the version folders are polled, which folders are
versions and where a version is loaded from, which SavedModels load, how labels follow config reloads, how failed loads
are retried, and how warmup is replayed.

Each case says which part of TF Serving it follows (paths under tensorflow_serving/):
sources/storage_path/file_system_storage_path_source.cc (version folders), model_servers/server_core.cc
(`UpdateModelVersionLabelMap`, `allow_version_labels_for_unavailable_models`), core/loader_harness.cc and util/retrier.cc
(retries), core/aspired_versions_manager.cc and core/availability_preserving_policy.cc (what is loaded again, what is
unloaded), servables/tensorflow/saved_model_warmup_util.cc (warmup), model_servers/main.cc (flag names and defaults), and
the SavedModels of model_servers/tensorflow_model_server_test.py (`test_tf_saved_model_save*`, `00000123`).

The tiny models are built here: Keras 3 `model.export`, `tf.saved_model.save` of a `tf.Module` or `Checkpoint`, and a TF1
`SavedModelBuilder`. Servers are started on 127.0.0.1 with free ports.
"""
from __future__ import annotations
import inspect, json, logging, os, shutil, threading, time
from pathlib import Path

import numpy as np
import grpc, httpx, pytest
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc, predict_pb2, prediction_log_pb2,
                                     prediction_service_pb2_grpc)

from mlinfra_nb.workspace import import_tensorflow
from mlinfra_nb.serve.config import model_config, server_config, write_text_proto
from mlinfra_nb.serve.export import WARMUP_FILE, version_folders, warmup_requests, write_warmup
from mlinfra_nb.serve.models import ModelManager, ServingError
from mlinfra_nb.serve.server import ModelServer

tf = import_tensorflow()
keras = tf.keras


# --- models and helpers ------------------------------------------------------------------------------------------------

def export_keras(path:Path, offset:float):
    "Keras 3 `model.export`: x float32 [n] -> x + offset (one output, `output_0`); the offset tells versions apart."
    x = keras.Input((), name='x')
    keras.Model(x, keras.layers.Lambda(lambda t: t + offset)(x)).export(str(path), verbose=False)

@pytest.fixture(scope='module')
def lib(tmp_path_factory):
    "Keras exports with offsets 1, 2, 3, made once and copied where a test wants them."
    root = tmp_path_factory.mktemp('manager_models')
    for v in (1, 2, 3): export_keras(root/str(v), float(v))
    return root

def publish(lib:Path, base:Path, folder:str|int, offset:int):
    "Copy the export with `offset` to `base/folder` through a hidden name and a rename, as `serve.export` writes it."
    tmp = base/f'.tmp-{folder}'
    shutil.copytree(lib/str(offset), tmp)
    os.rename(tmp, base/str(folder))

def write_broken(folder:Path):
    "A version folder whose saved_model.pb is garbage (a copy caught half-way, or a corrupt file)."
    folder.mkdir(parents=True, exist_ok=True)
    (folder/'saved_model.pb').write_bytes(b'\x0a\xff not a SavedModel')

def predict(mgr:ModelManager, name:str, x=(1.0,), version:int|None=None, label:str|None=None, signature:str='serving_default'):
    "The first output of `signature` of the servable addressed, for float32 `x`, as a list."
    with mgr.using(name, version, label) as s:
        out = s.run(signature, {next(iter(s.inputs(signature))): np.asarray(x, np.float32)})
    return np.asarray(next(iter(out.values()))).tolist()

def wait_for(cond, timeout:float=30, every:float=0.02):
    "Wait until `cond()` is true; fail after `timeout` seconds."
    deadline = time.monotonic() + timeout
    while not (got := cond()) and time.monotonic() < deadline: time.sleep(every)
    assert got, f"still not true after {timeout}s"
    return got

def states(mgr:ModelManager, name:str)->dict: return mgr.status_all().get(name, {})

@pytest.fixture
def managers():
    "Managers made in a test, closed at its end (their poll and retry threads stop)."
    made = []
    def make(*args, **kw):
        made.append(ModelManager(*args, **kw)); return made[-1]
    yield make
    for m in made: m.close()

@pytest.fixture
def base(tmp_path): return tmp_path/'models'


# --- 1. the constructor and the polls (main.cc: --model_config_file_poll_wait_seconds, --file_system_poll_wait_seconds) --

def test_constructor_names_and_defaults_follow_tf_serving_flags(lib, base, managers):
    "The keyword names the CLI wires its flags to, with TF Serving's defaults, each kept as an attribute of the same name."
    params = inspect.signature(ModelManager).parameters
    assert list(params)[:4] == ['config', 'config_file', 'poll_seconds', 'warmup']
    defaults = {'config_poll_seconds': None, 'load_retries': 5, 'retry_interval': 60.0, 'allow_unavailable_labels': False,
                'warmup_iterations': 1}
    for k, v in defaults.items():
        assert params[k].kind is inspect.Parameter.KEYWORD_ONLY and params[k].default == v, k
    base.mkdir(); publish(lib, base, 1, 1)
    mgr = managers(server_config(model_config('m', base)), None, 0, False, config_poll_seconds=3, load_retries=2,
                   retry_interval=0.5, allow_unavailable_labels=True, warmup_iterations=4)
    got = {k: getattr(mgr, k) for k in ['poll_seconds', 'warmup', *defaults]}
    assert got == {'poll_seconds': 0, 'warmup': False, 'config_poll_seconds': 3, 'load_retries': 2, 'retry_interval': 0.5,
                   'allow_unavailable_labels': True, 'warmup_iterations': 4}

def test_config_read_once_when_config_poll_seconds_is_zero(lib, base, tmp_path, managers):
    "--model_config_file_poll_wait_seconds=0: the file is read once at start; the folders are still rescanned every poll."
    base.mkdir(); publish(lib, base, 1, 1)
    cfg = write_text_proto(server_config(model_config('m', base)), tmp_path/'models.config')
    mgr = managers(config_file=cfg, poll_seconds=0.05, config_poll_seconds=0)
    write_text_proto(server_config(model_config('m', base, [1])), cfg)          # never read: the latest version still wins
    publish(lib, base, 2, 2)
    wait_for(lambda: states(mgr, 'm').get(2) == 'AVAILABLE')
    assert predict(mgr, 'm', [1.0]) == [3.0]

def test_config_file_and_folders_polled_at_their_own_rates(lib, base, tmp_path, managers):
    "A slow config poll and a fast folder poll: a new folder is found before an edit of the file is read."
    base.mkdir(); publish(lib, base, 1, 1)
    cfg = write_text_proto(server_config(model_config('m', base, 'all')), tmp_path/'models.config')
    mgr = managers(config_file=cfg, poll_seconds=0.05, config_poll_seconds=2)
    write_text_proto(server_config(model_config('m', base, 'all', labels={'stable': 1})), cfg)
    publish(lib, base, 2, 2)
    wait_for(lambda: states(mgr, 'm').get(2) == 'AVAILABLE')
    assert mgr.labels['m'] == {}, "the file was read before its interval"
    wait_for(lambda: mgr.labels['m'] == {'stable': 1})

def test_config_file_polled_without_folder_poll(lib, base, tmp_path, managers):
    "poll_seconds=0 with config_poll_seconds>0: the file is still re-read, and applied, at its interval."
    base.mkdir(); publish(lib, base, 1, 1); publish(lib, base, 2, 2)
    cfg = write_text_proto(server_config(model_config('m', base, [1])), tmp_path/'models.config')
    mgr = managers(config_file=cfg, poll_seconds=0, config_poll_seconds=0.05)
    write_text_proto(server_config(model_config('m', base, [2])), cfg)
    wait_for(lambda: states(mgr, 'm') == {1: 'END', 2: 'AVAILABLE'})

def test_no_poll_thread_without_periods(lib, base, tmp_path, managers):
    "poll_seconds <= 0 and no config file (or config_poll_seconds=0): nothing polls; a new folder waits for `rescan`."
    base.mkdir(); publish(lib, base, 1, 1)
    cfg = write_text_proto(server_config(model_config('m', base)), tmp_path/'models.config')
    for mgr in (managers(server_config(model_config('m', base)), poll_seconds=-1),
                managers(config_file=cfg, poll_seconds=0, config_poll_seconds=0)):
        assert mgr._thread is None
    publish(lib, base, 2, 2)
    time.sleep(0.2)
    assert states(mgr, 'm') == {1: 'AVAILABLE'}
    mgr.rescan()
    assert states(mgr, 'm') == {1: 'END', 2: 'AVAILABLE'}


# --- 2. version folders (file_system_storage_path_source.cc) -----------------------------------------------------------

def test_padded_version_folder_loads_from_its_own_folder(lib, base, managers):
    """TF Serving's test models live in `00000123`: any all-digit name is a version (SimpleAtoi), and the version is loaded
    from the folder as named (AspireVersion joins the base path and that child), not from `<base>/123`."""
    base.mkdir(); publish(lib, base, '00000123', 1)
    mgr = managers(server_config(model_config('m', base, labels={'stable': 123})))
    (s,) = mgr.status('m')
    assert (s.version, s.state, s.path, s.error) == (123, 'AVAILABLE', base/'00000123', '')
    assert predict(mgr, 'm', [1.0], label='stable') == predict(mgr, 'm', [1.0], version=123) == [2.0]
    publish(lib, base, '0000124', 2)                     # the next one, padded differently
    mgr.rescan()
    assert states(mgr, 'm') == {123: 'END', 124: 'AVAILABLE'} and mgr.status('m', 124)[0].path == base/'0000124'

def test_duplicate_version_folders_the_name_sorting_last_wins(lib, base, managers, caplog):
    """Two folders naming one version: TF Serving indexes the children in name order and the later one replaces the earlier
    (IndexChildrenByVersion), logging "Duplicate version directories detected. Version 7 will be loaded from ..., ... will
    be ignored." The same holds for every policy here."""
    base.mkdir()
    publish(lib, base, '007', 1); publish(lib, base, '7', 2); publish(lib, base, '0123', 1); publish(lib, base, '00123', 3)
    with caplog.at_level(logging.WARNING, logger='mlinfra_nb.serve'):
        assert version_folders(base.parent, base.name) == {7: base/'7', 123: base/'0123'}
    assert f"Duplicate version directories detected. Version 7 will be loaded from {base/'7'}, {base/'007'} will be ignored." in caplog.text
    for policy in ('latest', 'all', [7, 123]):
        mgr = managers(server_config(model_config('m', base, policy)))
        assert predict(mgr, 'm', [0.0], version=123) == [1.0]            # from '0123' (offset 1), not '00123' (offset 3)
        if policy != 'latest': assert predict(mgr, 'm', [0.0], version=7) == [2.0]     # from '7' (offset 2), not '007'

def test_names_that_are_not_versions_are_ignored(lib, base, managers):
    "Hidden copies, words, mixed names, non-ASCII digits, numbers past int64 and plain files are not versions."
    base.mkdir(); publish(lib, base, 1, 1)
    for name in ['.tmp-5', 'logs', '12a', '+3', '-4', '٣', str(2**63)]: (base/name).mkdir()
    (base/'6').write_text('a file, not a folder')
    assert version_folders(base.parent, base.name) == {1: base/'1'}
    mgr = managers(server_config(model_config('m', base, 'all')))
    assert states(mgr, 'm') == {1: 'AVAILABLE'}

def test_missing_base_path_leaves_the_model_as_it_is(lib, base, tmp_path, managers, caplog):
    """A base path that disappears (an unmounted volume) is an error of that poll in TF Serving ("Could not find base path
    ... for servable ..."), not a reason to unload: the versions keep serving, and come back into the plan with the folder."""
    base.mkdir(); publish(lib, base, 1, 1)
    mgr = managers(server_config(model_config('m', base)))
    moved = tmp_path/'elsewhere'; base.rename(moved)
    with caplog.at_level(logging.WARNING, logger='mlinfra_nb.serve'): mgr.rescan()
    assert f"Could not find base path {base} for servable m" in caplog.text
    assert states(mgr, 'm') == {1: 'AVAILABLE'} and predict(mgr, 'm') == [2.0]
    moved.rename(base); publish(lib, base, 2, 2); mgr.rescan()
    assert states(mgr, 'm') == {1: 'END', 2: 'AVAILABLE'}

def test_removing_every_version_folder_unloads_the_model(lib, base, managers):
    """With no version folder left nothing is aspired, and TF Serving's availability-preserving policy unloads what serves
    (`!has_aspired`); requests then get "Servable not found"."""
    base.mkdir(); publish(lib, base, 1, 1)
    mgr = managers(server_config(model_config('m', base)))
    shutil.rmtree(base/'1'); mgr.rescan()
    assert states(mgr, 'm') == {1: 'END'}
    with pytest.raises(ServingError, match=r'Servable not found for request: Latest\(m\)'): mgr.servable('m')


# --- 3. SavedModels of every common kind (tensorflow_model_server_test.py) --------------------------------------------

def save_checkpoint_unknown_rank(path:Path):
    "test_tf_saved_model_save: a Checkpoint with two variables; its one signature takes a float tensor of unknown rank."
    root = tf.train.Checkpoint(); root.v1 = tf.Variable(3.); root.v2 = tf.Variable(2.)
    root.f = tf.function(lambda x: {'y': root.v1 * root.v2 * x})
    tf.saved_model.save(root, str(path), root.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))

def save_two_signatures(path:Path):
    "test_tf_saved_model_save_multiple_signatures: two signatures answering constants."
    root = tf.train.Checkpoint()
    root.f = tf.function(lambda x: {'y': 1.}, input_signature=[tf.TensorSpec(None, tf.float32)])
    root.g = tf.function(lambda x: {'y': 2.}, input_signature=[tf.TensorSpec(None, tf.float32)])
    tf.saved_model.save(root, str(path), signatures={'serving_default': root.f, 'custom_signature_key': root.g})

def save_module(path:Path):
    "A tf.Module with a signature whose inputs are named by their TensorSpecs, not by the Python arguments."
    class Adder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name='first'), tf.TensorSpec([None], tf.float32, name='second')])
        def add(self, a, b): return {'sum': a + b}
    m = Adder(); tf.saved_model.save(m, str(path), signatures=m.add)

def save_sequential(path:Path):
    "test_sequential_keras_saved_model_save: a Keras Sequential model through tf.saved_model.save (Keras 3 here)."
    model = keras.models.Sequential([keras.layers.Input(dtype='float32', shape=(1,), name='x'), keras.layers.Lambda(lambda x: x, name='y')])
    tf.saved_model.save(model, str(path))

def save_tf1(path:Path, tags=(['train'], ['serve']), text:bool=False):
    "A TF1 SavedModelBuilder export, half_plus_two style (y = 0.5 x + 2), with a meta graph per tag set."
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        x = tf.compat.v1.placeholder(tf.float32, [None], name='x'); a = tf.compat.v1.Variable(0.5, name='a')
        y = tf.identity(x * a + 2.0, name='y')
        sess.run(tf.compat.v1.global_variables_initializer())
        b = tf.compat.v1.saved_model.Builder(str(path))
        sig = {'serving_default': tf.compat.v1.saved_model.predict_signature_def({'x': x}, {'y': y})}
        b.add_meta_graph_and_variables(sess, tags[0], signature_def_map=sig)
        for t in tags[1:]: b.add_meta_graph(t, signature_def_map=sig)
        b.save(as_text=text)

def save_tf1_legacy_shapes(path:Path):
    """A TF1 export as TensorFlow 1.0 wrote it (TF Serving's half_plus_three is one): GraphDef version 21, where an empty
    shape on a placeholder and a signature tensor with no shape mean unknown, not scalar."""
    save_tf1(path, (['serve'],))
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel.FromString((path/'saved_model.pb').read_bytes())
    mg = sm.meta_graphs[0]; mg.graph_def.versions.producer = 21
    sd = mg.signature_def['serving_default']
    for t in [*sd.inputs.values(), *sd.outputs.values()]: t.tensor_shape.Clear(); t.tensor_shape.SetInParent()   # empty; the graph's tensors keep [None]
    (path/'saved_model.pb').write_bytes(sm.SerializeToString())

KINDS = {   # name -> (how it is saved, signature, input, expected output)
    'checkpoint_unknown_rank': (save_checkpoint_unknown_rank, 'serving_default', [[2.0]], [[12.0]]),
    'two_signatures_default': (save_two_signatures, 'serving_default', [5.0], 1.0),
    'two_signatures_custom': (save_two_signatures, 'custom_signature_key', [5.0], 2.0),
    'module': (save_module, 'serving_default', [1.0], [2.0]),
    'keras_export': (lambda p: export_keras(p, 1.0), 'serving_default', [1.0], [2.0]),
    'keras_sequential': (save_sequential, 'serving_default', [[2.0]], [[2.0]]),
    'tf1_train_and_serve': (save_tf1, 'serving_default', [2.0], [3.0]),
    'tf1_text_proto': (lambda p: save_tf1(p, (['serve'],), text=True), 'serving_default', [2.0], [3.0]),
    'tf1_legacy_shapes': (save_tf1_legacy_shapes, 'serving_default', [[2.0], [4.0]], [[3.0], [4.0]]),
}

@pytest.mark.parametrize('kind', KINDS)
def test_every_common_savedmodel_kind_loads(kind, base, managers):
    "Each loads from a padded `00000123` folder and answers its signature (the `serve` meta graph, binary or text)."
    save, sig, x, want = KINDS[kind]
    save(base/'00000123')
    mgr = managers(server_config(model_config('m', base)), load_retries=0)
    (s,) = mgr.status('m')
    assert (s.version, s.state, s.error) == (123, 'AVAILABLE', '')
    with mgr.using('m') as s:
        out = s.run(sig, {k: np.asarray(x, np.float32) for k in s.inputs(sig)})     # the module adds `first` and `second`
    assert np.asarray(next(iter(out.values()))).tolist() == want

def test_unknown_rank_input_is_told_apart_from_a_scalar(base, managers):
    "The signature's TensorShapeProto says unknown_rank: its shape is None, while a scalar input's is []."
    save_checkpoint_unknown_rank(base/'1')
    ck = tf.train.Checkpoint(); ck.f = tf.function(lambda x: {'y': x}, input_signature=[tf.TensorSpec([], tf.float32)])
    tf.saved_model.save(ck, str(base.parent/'scalar'/'1'), signatures=ck.f)
    mgr = managers(server_config(model_config('m', base), model_config('s', base.parent/'scalar')))
    assert mgr.servable('m').inputs('serving_default') == {'x': ('float32', None)}
    assert mgr.servable('s').inputs('serving_default') == {'x': ('float32', [])}

def test_savedmodel_without_a_serve_meta_graph_is_refused_as_tf_serving_words_it(base, managers):
    "A SavedModel with only a `train` meta graph fails to load with TensorFlow's loader message; an empty folder names the files it looked for."
    save_tf1(base/'1', (['train'],))
    (base/'2').mkdir()
    mgr = managers(server_config(model_config('m', base, 'all')), load_retries=0)
    errors = {s.version: (s.state, s.error) for s in mgr.status('m')}
    assert errors[1] == ('END', "ValueError: Could not find meta graph def matching supplied tags: { serve }. To inspect available "
                                "tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`")
    assert errors[2] == ('END', f"FileNotFoundError: SavedModel file does not exist at: {base/'2'}/{{saved_model.pbtxt|saved_model.pb}}")

def test_savedmodel_kinds_through_the_server(base, tmp_path):
    """Through the server as TF Serving's integration tests call it: gRPC Predict of the custom signature and of the
    default one, and REST predict of the unknown-rank model in `00000123`."""
    save_two_signatures(base/'two'/'00000123'); save_checkpoint_unknown_rank(base/'ck'/'00000123')
    cfg = server_config(model_config('two', base/'two'), model_config('ck', base/'ck'))
    with ModelServer(config=cfg, rest_port=0, grpc_port=0, poll_seconds=0) as srv:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(srv.grpc_target))
        for sig, want in [('custom_signature_key', 2.0), ('', 1.0)]:
            req = predict_pb2.PredictRequest(); req.model_spec.name = 'two'; req.model_spec.signature_name = sig
            req.inputs['x'].CopyFrom(tf.make_tensor_proto(np.array([2.0], np.float32)))
            resp = stub.Predict(req, timeout=30)
            assert (float(tf.make_ndarray(resp.outputs['y'])), resp.model_spec.version.value) == (want, 123)
        r = httpx.post(f'{srv.rest_url}/v1/models/ck:predict', json={'inputs': [[1.0, 2.0]]}, timeout=30)
        assert (r.status_code, r.json()) == (200, {'outputs': [[6.0, 12.0]]})
        r = httpx.get(f'{srv.rest_url}/v1/models/ck', timeout=30)
        assert r.json()['model_version_status'][0]['version'] == '123'


# --- 4. labels and config reloads (server_core.cc: ReloadConfig, UpdateModelVersionLabelMap) ---------------------------

def two_models(lib:Path, base:Path):
    "Model `a` (versions 1, 2 on disk) and model `b` (version 1)."
    (base/'a').mkdir(parents=True); (base/'b').mkdir()
    publish(lib, base/'a', 1, 1); publish(lib, base/'a', 2, 2); publish(lib, base/'b', 1, 1)

def test_kept_model_cannot_load_and_label_in_one_change(lib, base, managers):
    """TF Serving checks labels before it loads: for a model that stays in the config a label must name a version that is
    AVAILABLE already. The refusal is FAILED_PRECONDITION with TF Serving's words and the reason, and nothing changes."""
    two_models(lib, base)
    mgr = managers(server_config(model_config('a', base/'a', [1], labels={'stable': 1})))
    for versions, reason in [([1, 2], "(label 'canary': version 2 is not loaded yet: load it with one config, then label it with the next)"),
                             ([1], "(label 'canary': its policy serves no version 2 (it serves: 1))")]:
        with pytest.raises(ServingError) as e: mgr.apply(server_config(model_config('a', base/'a', versions, labels={'stable': 1, 'canary': 2})))
        assert e.value.code == 'FAILED_PRECONDITION'
        assert str(e.value) == f"Request to assign label to version 2 of model a, which is not currently available for inference {reason}"
        assert (states(mgr, 'a'), mgr.labels) == ({1: 'AVAILABLE'}, {'a': {'stable': 1}})
    mgr.apply(server_config(model_config('a', base/'a', [1, 2], labels={'stable': 1})))
    mgr.apply(server_config(model_config('a', base/'a', [1, 2], labels={'stable': 1, 'canary': 2})))
    assert predict(mgr, 'a', label='canary') == [3.0]

def test_new_model_with_labels_is_added_in_one_change(lib, base, managers):
    "A model new to the config has nothing available before the change; its labels are checked once its versions have loaded."
    two_models(lib, base)
    mgr = managers(server_config(model_config('a', base/'a', [1])))
    mgr.apply(server_config(model_config('a', base/'a', [1]), model_config('b', base/'b', labels={'stable': 1})))
    assert (predict(mgr, 'b', label='stable'), mgr.labels['b']) == ([2.0], {'stable': 1})
    with pytest.raises(ServingError, match=r"version 7 of model c, .* \(label 'x': its policy serves no version 7 \(it serves: 1\)\)"):
        mgr.apply(server_config(model_config('a', base/'a', [1]), model_config('c', base/'b', labels={'x': 7})))
    assert 'c' not in mgr.labels and states(mgr, 'c') == {}       # refused before anything was loaded

def test_labelled_model_removed_and_restored(lib, base, tmp_path, managers):
    """The config file labels `a`; a reload without `a` (what HandleReloadConfigRequest does) takes it out; the next poll of
    the file puts it back with its labels, and polls go on finding new versions of every model."""
    two_models(lib, base)
    full = server_config(model_config('a', base/'a', [1, 2], labels={'stable': 1, 'canary': 2}), model_config('b', base/'b'))
    cfg = write_text_proto(full, tmp_path/'models.config')
    mgr = managers(config_file=cfg, poll_seconds=0.05, config_poll_seconds=2)     # the first read of the file is 2 s away
    mgr.apply(server_config(model_config('b', base/'b')))
    assert 'a' not in mgr.labels and states(mgr, 'a') == {1: 'END', 2: 'END'}
    wait_for(lambda: mgr.labels.get('a') == {'stable': 1, 'canary': 2})
    assert (predict(mgr, 'a', label='stable'), predict(mgr, 'a', label='canary')) == ([2.0], [3.0])
    publish(lib, base/'b', 2, 3)
    wait_for(lambda: states(mgr, 'b') == {1: 'END', 2: 'AVAILABLE'})
    assert predict(mgr, 'b') == [4.0]

def test_labelled_model_removed_by_grpc_reload_comes_back_with_the_config_file(lib, base, tmp_path):
    "The same through the server: one HandleReloadConfigRequest without the labelled model does not wedge later polls."
    two_models(lib, base)
    full = server_config(model_config('a', base/'a', [1, 2], labels={'stable': 1}), model_config('b', base/'b'))
    cfg = write_text_proto(full, tmp_path/'models.config')
    with ModelServer(model_config_file=cfg, rest_port=0, grpc_port=0, poll_seconds=0.1) as srv:
        stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(srv.grpc_target))
        resp = stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=server_config(model_config('b', base/'b'))), timeout=60)
        assert resp.status.error_code == 0
        publish(lib, base/'b', 2, 3)
        label = lambda: httpx.post(f'{srv.rest_url}/v1/models/a/labels/stable:predict', json={'instances': [1.0]}, timeout=30)
        wait_for(lambda: label().status_code == 200)
        assert label().json() == {'predictions': [2.0]}
        wait_for(lambda: httpx.post(f'{srv.rest_url}/v1/models/b:predict', json={'instances': [1.0]}, timeout=30).json() == {'predictions': [4.0]})

def test_refused_config_file_keeps_the_last_good_one_and_the_folders_polled(lib, base, tmp_path, managers, caplog):
    """A config file whose label names a version that does not exist is refused at every poll, with the reason in the log;
    the last good config stays in force (labels included), and new versions of every model are still found under it, as
    TF Serving's file-system source goes on polling with the last accepted config."""
    two_models(lib, base)
    good = server_config(model_config('a', base/'a', labels={'stable': 2}), model_config('b', base/'b'))
    cfg = write_text_proto(good, tmp_path/'models.config')
    mgr = managers(config_file=cfg, poll_seconds=0.05)
    with caplog.at_level(logging.WARNING, logger='mlinfra_nb.serve'):
        write_text_proto(server_config(model_config('a', base/'a', labels={'stable': 9}), model_config('b', base/'b')), cfg)
        wait_for(lambda: "config reload failed, keeping the last good one: Request to assign label to version 9 of model a" in caplog.text)
    publish(lib, base/'a', 3, 3); publish(lib, base/'b', 2, 2)
    wait_for(lambda: states(mgr, 'a').get(3) == 'AVAILABLE' and states(mgr, 'b').get(2) == 'AVAILABLE')
    assert mgr.config == good and mgr.labels == {'a': {'stable': 2}, 'b': {}}
    assert (predict(mgr, 'a'), predict(mgr, 'b')) == ([4.0], [3.0])
    write_text_proto(server_config(model_config('a', base/'a', labels={'stable': 3}), model_config('b', base/'b')), cfg)
    wait_for(lambda: mgr.labels['a'] == {'stable': 3})

def test_allow_unavailable_labels_as_tf_serving(lib, base, managers):
    """--allow_version_labels_for_unavailable_models: a new label, or one kept on its version, may name a version that is
    not available (even one that does not exist); a label that exists may only move to an AVAILABLE version."""
    two_models(lib, base)
    strict = managers(server_config(model_config('a', base/'a', [1])))
    with pytest.raises(ServingError, match='not currently available for inference'):
        strict.apply(server_config(model_config('a', base/'a', [1], labels={'next': 2})))
    mgr = managers(server_config(model_config('a', base/'a', [1], labels={'stable': 1, 'next': 2})), allow_unavailable_labels=True)
    with pytest.raises(ServingError, match=r'Servable not found for request: Specific\(a, 2\)'): mgr.servable('a', label='next')
    mgr.apply(server_config(model_config('a', base/'a', [1], labels={'stable': 1, 'next': 2, 'bogus': 42})))
    with pytest.raises(ServingError) as e: mgr.apply(server_config(model_config('a', base/'a', [1, 2], labels={'stable': 2})))
    assert str(e.value) == ("Request to assign label to version 2 of model a, which is not currently available for inference "
                            "(label 'stable': it is on version 1, and a label may only move to an available version)")
    assert mgr.labels['a'] == {'stable': 1, 'next': 2, 'bogus': 42} and states(mgr, 'a') == {1: 'AVAILABLE'}
    mgr.apply(server_config(model_config('a', base/'a', [1, 2], labels={'stable': 1, 'next': 2})))
    assert predict(mgr, 'a', label='next') == [3.0]
    mgr.apply(server_config(model_config('a', base/'a', [1, 2], labels={'stable': 2})))      # moves to an available version
    assert predict(mgr, 'a', label='stable') == [3.0]

def test_new_model_whose_labelled_version_fails_is_refused_with_its_error(base, managers):
    "A new model's label on a version that fails to load: refused after the load, naming the load error."
    write_broken(base/'1')
    mgr = managers(server_config(), load_retries=0)
    with pytest.raises(ServingError, match=r"\(label 'stable': version 1 failed to load: DecodeError: "):
        mgr.apply(server_config(model_config('m', base, labels={'stable': 1})))
    assert mgr.labels == {} and mgr.config == server_config()


# --- 5. retries of failed loads (loader_harness.cc, retrier.cc, aspired_versions_manager.cc) ---------------------------

def test_failed_load_is_retried_until_the_copy_is_complete(lib, base, managers, caplog):
    """A version copied in file by file fails its first load; TF Serving retries it (--max_num_load_retries) every
    --load_retry_interval_micros, logging "Retrying of Loading servable: {name: m version: 2} retry: N". It stays LOADING
    meanwhile and version 1 serves; once the copy is complete it loads, and version 1 goes."""
    base.mkdir(); publish(lib, base, 1, 1)
    mgr = managers(server_config(model_config('m', base)), load_retries=100, retry_interval=0.05)
    write_broken(base/'2')
    with caplog.at_level(logging.INFO, logger='mlinfra_nb.serve'):
        mgr.rescan()
        assert states(mgr, 'm') == {1: 'AVAILABLE', 2: 'LOADING'}
        wait_for(lambda: mgr.status('m', 2)[0].retries >= 2)
        assert predict(mgr, 'm') == [2.0] and mgr.status('m', 2)[0].error == ''
        shutil.rmtree(base/'2'); publish(lib, base, 2, 2)
        wait_for(lambda: states(mgr, 'm') == {1: 'END', 2: 'AVAILABLE'})
    assert predict(mgr, 'm') == [3.0]
    assert "Loading servable: {name: m version: 2} failed: DecodeError" in caplog.text
    assert "Retrying of Loading servable: {name: m version: 2} retry: 1" in caplog.text

def test_retries_run_out_then_end_with_the_error_until_the_folder_comes_back(lib, base, managers, caplog):
    """After max_num_load_retries the version is END with its error (ErrorInternal), and is not loaded again while it stays
    aspired (enable_reload_servables_with_error is off). A folder that disappears is no longer aspired; when it comes back
    it is a new servable to the manager and loads, with retries of its own."""
    base.mkdir(); publish(lib, base, 1, 1)
    mgr = managers(server_config(model_config('m', base)), load_retries=2, retry_interval=0.01)
    write_broken(base/'2')
    with caplog.at_level(logging.INFO, logger='mlinfra_nb.serve'):
        mgr.rescan()
        wait_for(lambda: states(mgr, 'm')[2] == 'END')
    (s,) = mgr.status('m', 2)
    assert (s.retries, s.error.startswith('DecodeError: '), states(mgr, 'm')) == (2, True, {1: 'AVAILABLE', 2: 'END'})
    assert "Retrying of Loading servable: {name: m version: 2} exhausted max_num_retries: 2" in caplog.text
    shutil.rmtree(base/'2'); publish(lib, base, 2, 2); mgr.rescan()         # fixed in place: still the failed servable
    assert states(mgr, 'm') == {1: 'AVAILABLE', 2: 'END'} and mgr.status('m', 2)[0] is s
    shutil.rmtree(base/'2'); mgr.rescan()                                     # gone...
    publish(lib, base, 2, 2); mgr.rescan()                                    # ...and back
    assert states(mgr, 'm') == {1: 'END', 2: 'AVAILABLE'} and predict(mgr, 'm') == [3.0]

def test_retries_block_neither_requests_nor_other_models(lib, base, managers):
    """A retried load waits in a thread of its own: requests to the version serving meanwhile are answered, and the polls
    find and load new versions of other models, all within the retry interval; `close` stops the retry at once."""
    two_models(lib, base)
    mgr = managers(server_config(model_config('a', base/'a'), model_config('b', base/'b')), poll_seconds=0.05,
                   load_retries=5, retry_interval=30)
    t0 = time.monotonic()
    write_broken(base/'a'/'3')
    wait_for(lambda: states(mgr, 'a').get(3) == 'LOADING')
    publish(lib, base/'b', 2, 2)
    wait_for(lambda: states(mgr, 'b').get(2) == 'AVAILABLE')
    assert [predict(mgr, 'a') for _ in range(20)] == [[3.0]] * 20 and predict(mgr, 'b') == [3.0]
    mgr.close()
    wait_for(lambda: states(mgr, 'a')[3] == 'END', timeout=5)
    assert time.monotonic() - t0 < 25 and mgr.status('a', 3)[0].retries == 0

def test_retry_stops_when_no_config_wants_the_version(lib, base, managers, caplog):
    "A version dropped from the aspired set has its retries cancelled (CancelLoadServableRetry): END with its last error."
    two_models(lib, base)
    write_broken(base/'a'/'3')
    mgr = managers(server_config(model_config('a', base/'a', [1])), load_retries=5, retry_interval=30)
    with caplog.at_level(logging.INFO, logger='mlinfra_nb.serve'):
        mgr.apply(server_config(model_config('a', base/'a', [1, 3])))
        assert states(mgr, 'a') == {1: 'AVAILABLE', 3: 'LOADING'}
        mgr.apply(server_config(model_config('a', base/'a', [1])))
        wait_for(lambda: states(mgr, 'a')[3] == 'END', timeout=5)
    assert mgr.status('a', 3)[0].error.startswith('DecodeError: ')
    assert "Retrying of Loading servable: {name: a version: 3} was cancelled." in caplog.text

def test_zero_retries_and_a_negative_interval(lib, base, managers):
    "--max_num_load_retries=0: one attempt, END at once. A negative --load_retry_interval_micros: retries without waiting."
    base.mkdir(); write_broken(base/'1')
    once = managers(server_config(model_config('m', base)), load_retries=0, retry_interval=60)
    assert (states(once, 'm'), once.status('m', 1)[0].retries) == ({1: 'END'}, 0)
    t0 = time.monotonic()
    eager = managers(server_config(model_config('m', base)), load_retries=3, retry_interval=-1)
    assert (states(eager, 'm'), eager.status('m', 1)[0].retries) == ({1: 'END'}, 3)
    assert time.monotonic() - t0 < 10

def test_start_up_waits_for_the_retries_of_its_first_loads(lib, base, managers):
    """Like TF Serving's start-up (it waits for the first loads), the constructor returns once the first loads are done,
    retries included, so a version copied in during start-up is AVAILABLE and can carry a label from the start."""
    base.mkdir(); write_broken(base/'1')
    fix = threading.Timer(0.3, lambda: (shutil.rmtree(base/'1'), publish(lib, base, 1, 1)))
    fix.start()
    mgr = managers(server_config(model_config('m', base, labels={'stable': 1})), load_retries=50, retry_interval=0.05)
    fix.join()
    assert states(mgr, 'm') == {1: 'AVAILABLE'} and predict(mgr, 'm', label='stable') == [2.0]


# --- 6. warmup (saved_model_warmup_util.cc; main.cc: --enable_model_warmup, --num_request_iterations_for_warmup) -------

def save_counter(path:Path, logs:list|None=None):
    "A model that counts the calls of its `serving_default` (x -> x); `count` reads the counter. `logs`: its warmup file."
    class Counter(tf.Module):
        def __init__(self): self.calls = tf.Variable(0.0)
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def serve(self, x):
            with tf.control_dependencies([self.calls.assign_add(1.0)]): return {'y': tf.identity(x)}
        @tf.function(input_signature=[])
        def count(self): return {'calls': self.calls.read_value()}
    c = Counter(); tf.saved_model.save(c, str(path), signatures={'serving_default': c.serve, 'count': c.count})
    if logs is not None: write_warmup(path/WARMUP_FILE, logs)

def warmup_logs(n:int)->list:
    return warmup_requests({'x': [1.0, 2.0, 3.0]}, {'inputs': {'x': {'dtype': 'float32'}}}, 'm', n=n)

def calls(mgr:ModelManager)->float:
    with mgr.using('m') as s: return float(s.run('count', {})['calls'])

def test_each_warmup_record_is_replayed_warmup_iterations_times(base, managers):
    """--num_request_iterations_for_warmup: each record is run that many times before the version is AVAILABLE; TF Serving
    only takes values above 0 (0 or less: once). --enable_model_warmup=false: none is run."""
    save_counter(base/'1', warmup_logs(3))
    got = {}
    for warmup, n in [(True, 1), (True, 4), (True, 0), (False, 4)]:
        got[warmup, n] = calls(managers(server_config(model_config('m', base)), warmup=warmup, warmup_iterations=n))
    assert got == {(True, 1): 3.0, (True, 4): 12.0, (True, 0): 3.0, (False, 4): 0.0}

def test_warmup_runs_again_when_a_version_is_loaded_again(base, managers):
    "Warmup belongs to the load: a version unloaded and loaded again (policy dropped it, then took it back) is warmed up again."
    save_counter(base/'1', warmup_logs(2))
    mgr = managers(server_config(model_config('m', base)), warmup_iterations=2)
    assert calls(mgr) == 4.0
    mgr.apply(server_config(model_config('m', base, [7])))          # nothing served
    mgr.apply(server_config(model_config('m', base, [1])))
    assert calls(mgr) == 4.0                                         # a fresh load: the counter restarts at 0, then 2 x 2

def test_failing_warmup_fails_the_load(base, managers):
    "A warmup request that fails fails the load (TF_RETURN_IF_ERROR on each record): END with the request's error."
    logs = warmup_logs(1)
    bad = logs[0].predict_log.request; bad.inputs['wrong'].CopyFrom(bad.inputs.pop('x'))
    save_counter(base/'1', logs)
    mgr = managers(server_config(model_config('m', base)), load_retries=0)
    assert states(mgr, 'm') == {1: 'END'} and mgr.status('m', 1)[0].error.startswith('ServingError: input size does not match signature') and 'Missing but required: {x}' in mgr.status('m', 1)[0].error
    ok = managers(server_config(model_config('m', base)), warmup=False, load_retries=0)
    assert states(ok, 'm') == {1: 'AVAILABLE'}

def test_warmup_file_limits_and_formats(base, managers):
    """TF Serving's warmup errors: more than kMaxNumRecords (1000) records, a file that is not TFRecords, and log types it
    cannot replay (the local server replays predict logs; a record with no log type is skipped)."""
    too_many = warmup_logs(1) * 1001
    save_counter(base/'1', too_many)
    save_counter(base/'2'); (base/'2'/WARMUP_FILE).parent.mkdir(); (base/'2'/WARMUP_FILE).write_bytes(b'not tfrecords at all')
    classify = prediction_log_pb2.PredictionLog(); classify.classify_log.request.model_spec.name = 'm'
    save_counter(base/'3', [classify]); save_counter(base/'4', [prediction_log_pb2.PredictionLog(), *warmup_logs(1)])
    mgr = managers(server_config(model_config('m', base, 'all')), load_retries=0)
    errors = {s.version: s.error for s in mgr.status('m')}
    assert errors[1] == f"ValueError: Number of warmup records exceeds the maximum (1000) at {base/'1'/WARMUP_FILE}"
    assert errors[2].startswith('ValueError: ') and errors[2].endswith('. Please verify your warmup data is in TFRecord format.')
    assert errors[3] == 'ServingError: Unsupported log_type for warmup: classify_log (the local server replays predict logs)'
    assert errors[4] == '' and states(mgr, 'm')[4] == 'AVAILABLE'
    with mgr.using('m', 4) as s: assert float(s.run('count', {})['calls']) == 1.0

def test_version_back_while_its_cancelled_retry_winds_down_loads_afresh(lib, base, managers):
    """Dropped while its retry waits, and wanted again before that retry has ended: a new load, not the cancelled one
    (TF Serving postpones a re-aspired version until the old one is gone; here the old one ends on its own)."""
    two_models(lib, base)
    write_broken(base/'a'/'3')
    mgr = managers(server_config(model_config('a', base/'a', [1])), load_retries=5, retry_interval=30)
    mgr.apply(server_config(model_config('a', base/'a', [1, 3])))
    first, release = mgr.status('a', 3)[0], threading.Event()
    real_fail = first.fail
    first.fail = lambda error: (release.wait(10), real_fail(error))      # the cancelled retry is slow to wind down
    mgr.apply(server_config(model_config('a', base/'a', [1])))
    assert first._cancel.is_set() and first.state == 'LOADING'
    shutil.rmtree(base/'a'/'3'); publish(lib, base/'a', 3, 3)
    mgr.apply(server_config(model_config('a', base/'a', [1, 3])))
    assert mgr.status('a', 3)[0] is not first and states(mgr, 'a') == {1: 'AVAILABLE', 3: 'AVAILABLE'}
    release.set()
    wait_for(lambda: first.state == 'END', timeout=5)
    assert states(mgr, 'a') == {1: 'AVAILABLE', 3: 'AVAILABLE'} and predict(mgr, 'a', version=3) == [4.0]
