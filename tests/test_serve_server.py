"""The local TF-Serving-compatible server (`mlinfra_nb.serve.server.ModelServer`) against TensorFlow Serving's documented
behaviour: bad REST and gRPC input gets TF Serving's error body and status code and never takes the server down, b64 and
NaN/Infinity round-trip, a full batching queue sheds load, versions roll out under traffic with no failed request, a broken
version leaves the old one serving, `HandleReloadConfigRequest` switches versions, and the metrics endpoint counts requests.

Real servers are started on 127.0.0.1 with free ports (port 0) by the fixtures and stopped afterwards. The tiny Keras models
are exported once per module into `<base>/<name>/<version>/`.

Each case states TF Serving's behaviour, with the source it comes from. The cases under "once differed" were bugs these
tests found in the server (500s on overflowing numbers, lone surrogates and deep nesting, wrong codes for bad URLs, silent
dtype conversion, labels moved in one step, ...); they are fixed, and the tests keep them fixed.

TF Serving sources quoted below: model_servers/http_rest_api_handler.cc and http_rest_api_util.cc (REST URLs, "Malformed
request", "Failed to convert version"), http_server.cc (status -> HTTP code; every /v1/.* path goes to the handler),
util/json_tensor.cc (JSON parsing and type errors), model_service_impl.cc (`return ToGRPCStatus(status)` from
HandleReloadConfigRequest), server.cc (`PollFilesystemAndReloadConfig` re-applies the file at every poll),
servables/tensorflow/util.cc and util/prometheus_exporter.cc (`:tensorflow:serving:request_count{model_name,status}`),
and TensorFlow's batching_util/shared_batch_scheduler.h and batching_session.cc.
"""
from __future__ import annotations
import base64, copy, http.client, json, math, os, random, re, shutil, threading, time
import concurrent.futures as cf
from collections import Counter
from pathlib import Path

import numpy as np
import grpc, httpx, pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, inference_pb2,
                                     model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from mlinfra_nb.workspace import import_tensorflow
from mlinfra_nb.serve.config import (batching_parameters, model_config, monitoring_config, server_config, write_configs,
                                     write_text_proto)
from mlinfra_nb.serve.server import ModelServer

tf = import_tensorflow()
keras = tf.keras

MAX_BODY = 64 << 10     # the main server's REST body limit
MAX_BATCH = 8           # the main server's max_batch_size
GOOD_VEC = {'instances': [[1.0, 2.0, 3.0]]}     # vec: sum(x) * 2 + 100 * version -> 112 (v1), 212 (v2), 312 (v3)


# --- models ------------------------------------------------------------------------------------------------------------

def export_vec(path:Path, offset:float):
    "x: float32 [n, 3] -> sum(x) * 2 + offset (one unnamed output); the offset tells versions apart."
    x = keras.Input((3,), name='x')
    keras.Model(x, keras.layers.Lambda(lambda t: keras.ops.sum(t, axis=-1) * 2 + offset)(x)).export(str(path), verbose=False)

def export_scale(path:Path):
    "x: float32 [n, 3] -> x * 2, element by element (NaN and infinities pass through)."
    x = keras.Input((3,), name='x')
    keras.Model(x, keras.layers.Lambda(lambda t: t * 2.0)(x)).export(str(path), verbose=False)

def export_multi(path:Path):
    "Four named inputs of four dtypes -> amount + count + len(tag) + flag."
    a = keras.Input((), name='amount'); c = keras.Input((), dtype='int32', name='count')
    g = keras.Input((), dtype='string', name='tag'); f = keras.Input((), dtype='bool', name='flag')
    def fn(t):
        a, c, g, f = t
        return a + tf.cast(c, 'float32') + tf.cast(tf.strings.length(g), 'float32') + tf.cast(f, 'float32')
    out = keras.layers.Lambda(fn, output_shape=lambda s: (s[0][0],))([a, c, g, f])
    keras.Model({'amount': a, 'count': c, 'tag': g, 'flag': f}, out).export(str(path), verbose=False)

def export_blob(path:Path):
    "data: string [n] -> echo_bytes (data twice; `_bytes` outputs come back as b64) and size (length in bytes)."
    d = keras.Input((), dtype='string', name='data')
    echo = keras.layers.Lambda(lambda t: tf.strings.join([t, t]), output_shape=lambda s: s)(d)
    size = keras.layers.Lambda(lambda t: tf.strings.length(t), output_shape=lambda s: s)(d)
    keras.Model(d, {'echo_bytes': echo, 'size': size}).export(str(path), verbose=False)

def export_slow(path:Path, n:int=100, size:int=256):
    "x: float32 [n, 1] -> x, after a chain of matmuls (tens of ms on a CPU) that depends on the input so it cannot be folded."
    x = keras.Input((1,), name='x')
    def fn(t):
        m = tf.ones((size, size)) * (1.0 + 0.0 * tf.reduce_sum(t))
        for _ in range(n): m = tf.matmul(m, m) / size
        return t + 0.0 * tf.reduce_sum(m)
    keras.Model(x, keras.layers.Lambda(fn, output_shape=lambda s: s)(x)).export(str(path), verbose=False)

def copy_version(lib:Path, name:str, version:int, base:Path, as_version:int|None=None):
    "Copy an exported version into `base/<as_version>`, through a hidden name and an atomic rename, as TF Serving asks."
    tmp = base/f'.tmp-{as_version or version}'
    shutil.copytree(lib/name/str(version), tmp)
    os.rename(tmp, base/str(as_version or version))

def write_broken_version(base:Path, version:int):
    "A version folder whose saved_model.pb is garbage."
    (base/str(version)).mkdir(parents=True)
    (base/str(version)/'saved_model.pb').write_bytes(b'\xde\xad\xbe\xef not a SavedModel' * 8)


@pytest.fixture(scope='module')
def lib(tmp_path_factory):
    "Every model version the tests serve, exported once."
    root = tmp_path_factory.mktemp('serve_models')
    for v in (1, 2, 3): export_vec(root/'vec'/str(v), 100.0 * v)
    export_scale(root/'scale'/'1'); export_multi(root/'multi'/'1'); export_blob(root/'blob'/'1'); export_slow(root/'slow'/'1')
    return root


def start_server(folder:Path, cfg, batching=None, **kw)->ModelServer:
    files = write_configs(folder, cfg, batching, monitoring_config())
    if batching is None: files.pop('batching_parameters_file')
    return ModelServer(**files, rest_port=0, grpc_port=0, **kw).start()


@pytest.fixture(scope='module')
def server(lib, tmp_path_factory):
    "vec (v1 'stable', v2 'canary'), scale, multi and blob; batching (max 8 rows), metrics, a 64 KiB REST body limit."
    cfg = server_config(model_config('vec', lib/'vec', [1, 2], labels={'stable': 1, 'canary': 2}),
                        model_config('scale', lib/'scale'), model_config('multi', lib/'multi'), model_config('blob', lib/'blob'))
    srv = start_server(tmp_path_factory.mktemp('serve_cfg'), cfg, batching_parameters(max_batch_size=MAX_BATCH, batch_timeout_micros=500),
                       poll_seconds=0, max_body=MAX_BODY)
    yield srv
    srv.stop()


@pytest.fixture(scope='module')
def channel(server):
    ch = grpc.insecure_channel(server.grpc_target)
    yield ch
    ch.close()


# --- helpers -----------------------------------------------------------------------------------------------------------

def raw(srv:ModelServer, method:str, path:str, body=None, headers=None, timeout:float=30)->tuple[int, str, bytes]:
    "One HTTP/1.1 request on a fresh connection, body sent byte for byte (an iterator is sent chunked); (status, content type, body)."
    if isinstance(body, dict): body = json.dumps(body).encode()
    c = http.client.HTTPConnection('127.0.0.1', srv.rest_port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers={'Content-Type': 'application/json', **(headers or {})})
        r = c.getresponse()
        return r.status, r.getheader('content-type') or '', r.read()
    finally: c.close()

def tf_error(resp:tuple, status:int, pattern:str|None=None)->str:
    "Check `resp` is TF Serving's error: HTTP `status`, a JSON body `{\"error\": \"<message>\"}` whose message matches `pattern`."
    code, ctype, body = resp
    assert code == status, (code, body[:300])
    assert ctype.startswith('application/json'), (ctype, body[:300])
    doc = json.loads(body)
    assert isinstance(doc, dict) and set(doc) == {'error'} and isinstance(doc['error'], str) and doc['error'], doc
    if pattern: assert re.search(pattern, doc['error']), doc['error']
    return doc['error']

def assert_alive(srv:ModelServer):
    "The server still answers a good predict correctly."
    code, _, body = raw(srv, 'POST', '/v1/models/vec:predict', GOOD_VEC)
    assert code == 200, body[:300]
    assert json.loads(body) == {'predictions': [212.0]}

def predict_req(name:str='vec', inputs:dict|None=None, version:int|None=None, label:str|None=None,
                signature:str|None=None, output_filter=())->predict_pb2.PredictRequest:
    r = predict_pb2.PredictRequest()
    r.model_spec.name = name
    if version is not None: r.model_spec.version.value = version
    if label is not None: r.model_spec.version_label = label
    if signature is not None: r.model_spec.signature_name = signature
    r.output_filter.extend(output_filter)
    for k, v in (inputs if inputs is not None else {'x': np.array([[1, 2, 3]], np.float32)}).items():
        r.inputs[k].CopyFrom(v if isinstance(v, tensor_pb2.TensorProto) else tf.make_tensor_proto(v))
    return r

def grpc_alive(ch):
    resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(predict_req(), timeout=30)
    assert resp.model_spec.version.value == 2
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs['output_0']), [212.0])

def grpc_code(call, request)->tuple[grpc.StatusCode, str]:
    try: call(request, timeout=30)
    except grpc.RpcError as e: return e.code(), e.details() or ''
    return grpc.StatusCode.OK, ''

def multi_row(**kw)->dict:
    return {'amount': 1.5, 'count': 2, 'tag': 'abc', 'flag': True, **kw}


# --- 1. bad REST input ---------------------------------------------------------------------------------------------------

NESTED = b'{"instances": ' + b'[' * 5000 + b']' * 5000 + b'}'

REST_CASES = [
    # malformed JSON (json_tensor.cc ParseJson)
    ('truncated', 'POST', '/v1/models/vec:predict', b'{"instances": [[1, 2', 400, r'JSON Parse error'),
    ('truncated-key', 'POST', '/v1/models/vec:predict', b'{"inst', 400, r'JSON Parse error'),
    ('not-an-object', 'POST', '/v1/models/vec:predict', b'[[1, 2, 3]]', 400, r'Is not object'),
    ('string-document', 'POST', '/v1/models/vec:predict', b'"instances"', 400, r'Is not object'),
    ('empty-body', 'POST', '/v1/models/vec:predict', b'', 400, r'JSON Parse error.*empty'),
    ('whitespace-body', 'POST', '/v1/models/vec:predict', b'  \n ', 400, r'JSON Parse error'),
    ('invalid-utf8', 'POST', '/v1/models/vec:predict', b'\xff\xfe{"instances": [[1, 2, 3]]}', 400, r'JSON Parse error'),
    ('invalid-utf8-in-string', 'POST', '/v1/models/blob:predict', b'{"instances": ["\xc3\x28"]}', 400, r'JSON Parse error'),
    ('trailing-garbage', 'POST', '/v1/models/vec:predict', b'{"instances": [[1, 2, 3]]} x', 400, r'JSON Parse error'),
    # instances / inputs
    ('both-keys', 'POST', '/v1/models/vec:predict', {'instances': [[1, 2, 3]], 'inputs': [[1, 2, 3]]}, 400,
     r"expecting only one of 'inputs' or 'instances'"),
    ('neither-key', 'POST', '/v1/models/vec:predict', {'signature_name': 'serving_default'}, 400, r"Missing 'inputs' or 'instances' key"),
    ('empty-instances', 'POST', '/v1/models/vec:predict', {'instances': []}, 400, r"No values in 'instances' array"),
    ('instances-not-list', 'POST', '/v1/models/vec:predict', {'instances': {'x': [1, 2, 3]}}, 400, r"'instances' to be an list/array"),
    ('signature-not-string', 'POST', '/v1/models/vec:predict', {'instances': [[1, 2, 3]], 'signature_name': 5}, 400, r"'signature_name'.*string"),
    ('unknown-signature', 'POST', '/v1/models/vec:predict', {'instances': [[1, 2, 3]], 'signature_name': 'nope'}, 400, r'nope.*not found'),
    # dtypes (json_tensor.cc AddValueToTensor)
    ('string-for-float', 'POST', '/v1/models/vec:predict', {'instances': [['1', 2, 3]]}, 400, r'not of expected type: float'),
    ('bool-for-float', 'POST', '/v1/models/vec:predict', {'instances': [[True, 2, 3]]}, 400, r'not of expected type: float'),
    ('null-for-float', 'POST', '/v1/models/vec:predict', {'instances': [[None, 2, 3]]}, 400, r'not of expected type: float'),
    ('object-for-float', 'POST', '/v1/models/vec:predict', {'instances': [[{'b64': 'AA=='}, 2, 3]]}, 400, r'float'),
    ('fraction-for-int', 'POST', '/v1/models/multi:predict', {'instances': [multi_row(count=1.5)]}, 400, r'int32'),
    ('string-for-int', 'POST', '/v1/models/multi:predict', {'instances': [multi_row(count='2')]}, 400, r'int32'),
    ('number-for-bool', 'POST', '/v1/models/multi:predict', {'instances': [multi_row(flag=1)]}, 400, r'not of expected type: bool'),
    ('number-for-string', 'POST', '/v1/models/multi:predict', {'instances': [multi_row(tag=5)]}, 400, r'not of expected type: string'),
    ('bad-b64', 'POST', '/v1/models/blob:predict', {'instances': [{'b64': '!!not base64!!'}]}, 400, r'base64'),
    ('b64-not-string', 'POST', '/v1/models/blob:predict', {'instances': [{'b64': 17}]}, 400, None),
    # shapes
    ('rows-disagree', 'POST', '/v1/models/multi:predict', {'inputs': {'amount': [1.0], 'count': [1, 2], 'tag': ['a'], 'flag': [True]}}, 400, r'0th-dimension'),
    ('ragged-instances', 'POST', '/v1/models/vec:predict', {'instances': [[1, 2, 3], [1, 2]]}, 400, r'[Ee]xpecting'),
    ('ragged-inputs', 'POST', '/v1/models/vec:predict', {'inputs': [[1, 2, 3], [1, 2]]}, 400, r'unexpected size'),
    ('ragged-nested', 'POST', '/v1/models/vec:predict', {'inputs': [[1, 2, 3], [1, [2], 3]]}, 400, r'level'),
    ('flat-instances', 'POST', '/v1/models/vec:predict', {'instances': [1, 2, 3]}, 400, None),
    ('scalar-inputs', 'POST', '/v1/models/vec:predict', {'inputs': 5}, 400, None),
    # named inputs
    ('missing-named-instance', 'POST', '/v1/models/multi:predict',
     {'instances': [{'amount': 1.0, 'count': 1, 'tag': 'a'}]}, 400, r'keys'),
    ('extra-named-instance', 'POST', '/v1/models/multi:predict', {'instances': [multi_row(extra=1)]}, 400, r'keys'),
    ('missing-named-input', 'POST', '/v1/models/multi:predict',
     {'inputs': {'amount': [1.0], 'count': [1], 'tag': ['a']}}, 400, r'Missing named input: flag'),
    ('plain-instances-multi', 'POST', '/v1/models/multi:predict', {'instances': [[1, 2]]}, 400, r'instances is a plain list'),
    ('plain-inputs-multi', 'POST', '/v1/models/multi:predict', {'inputs': [1, 2]}, 400, r'inputs is a plain value/list'),
    ('object-then-list', 'POST', '/v1/models/multi:predict', {'instances': [multi_row(), [1, 2]]}, 400, r'Expecting object'),
    # models, versions, labels
    ('unknown-model', 'POST', '/v1/models/nope:predict', GOOD_VEC, 404, r'Servable not found for request: Latest\(nope\)'),
    ('unknown-version', 'POST', '/v1/models/vec/versions/9:predict', GOOD_VEC, 404, r'Specific\(vec, 9\)'),
    ('unknown-label', 'POST', '/v1/models/vec/labels/beta:predict', GOOD_VEC, 400, r'Unrecognized servable version label: beta'),
    ('status-unknown-model', 'GET', '/v1/models/nope', None, 404, r'Could not find any versions of model nope'),
    ('status-unknown-version', 'GET', '/v1/models/vec/versions/9', None, 404, None),
    ('status-unknown-label', 'GET', '/v1/models/vec/labels/beta', None, 400, r'Unrecognized servable version label: beta'),
    ('metadata-unknown-model', 'GET', '/v1/models/nope/metadata', None, 404, None),
    ('metadata-unknown-version', 'GET', '/v1/models/vec/versions/9/metadata', None, 404, None),
    # URLs and methods (http_rest_api_handler.cc: anything else under /v1/ is "Malformed request", INVALID_ARGUMENT)
    ('version-not-numeric', 'POST', '/v1/models/vec/versions/two:predict', GOOD_VEC, 400, r'Malformed request'),
    ('get-predict', 'GET', '/v1/models/vec:predict', None, 400, r'Malformed request: GET /v1/models/vec:predict'),
    ('post-status', 'POST', '/v1/models/vec', GOOD_VEC, 400, r'Malformed request'),
    ('unknown-verb', 'POST', '/v1/models/vec:explain', GOOD_VEC, 400, r'Malformed request'),
    ('no-model-name', 'GET', '/v1/models/', None, 400, None),
    ('classify-predict-signature', 'POST', '/v1/models/vec:classify', {'examples': [{'x': [1.0]}]}, 400,
     r'No classification inputs found in SignatureDef'),   # classifier.cc: one input, named `inputs`
    ('regress-predict-signature', 'POST', '/v1/models/vec:regress', {'examples': [{'x': [1.0]}]}, 400,
     r'No regression inputs found in SignatureDef'),
    # batching (shared_batch_scheduler.h: INVALID_ARGUMENT)
    ('instances-over-max-batch', 'POST', '/v1/models/vec:predict', {'instances': [[1, 2, 3]] * (MAX_BATCH + 1)}, 400,
     rf'Task size {MAX_BATCH + 1} is larger than maximum input batch size {MAX_BATCH}'),
    ('many-instances', 'POST', '/v1/models/vec:predict', {'instances': [[1, 2, 3]] * 2000}, 400,
     rf'Task size 2000 is larger than maximum input batch size {MAX_BATCH}'),
    ('inputs-over-max-batch', 'POST', '/v1/models/scale:predict', {'inputs': [[1, 2, 3]] * 100}, 400, r'Task size 100 is larger'),
    # ---- cases where the server once differed from TF Serving (found by these tests, fixed) ----
    pytest.param('int32-overflow', 'POST', '/v1/models/multi:predict', {'instances': [multi_row(count=2 ** 40)]}, 400,
                 r'not of expected type: int32'),
    pytest.param('whole-float-int32-overflow', 'POST', '/v1/models/multi:predict', {'instances': [multi_row(count=1e30)]}, 400,
                 r'int32'),
    pytest.param('lone-surrogate', 'POST', '/v1/models/blob:predict', b'{"instances": ["\\ud800"]}', 400, None),
    pytest.param('deeply-nested', 'POST', '/v1/models/vec:predict', NESTED, 400, r'JSON Parse error'),
    pytest.param('float32-overflow', 'POST', '/v1/models/vec:predict', {'instances': [[1e300, 2, 3]]}, 400,
                 r'loss of precision'),
    pytest.param('version-overflow-predict', 'POST', '/v1/models/vec/versions/99999999999999999999:predict', GOOD_VEC,
                 400, r'Failed to convert version'),
    pytest.param('version-overflow-metadata', 'GET', '/v1/models/vec/versions/99999999999999999999/metadata', None,
                 400, r'Failed to convert version'),
    pytest.param('version-overflow-status', 'GET', '/v1/models/vec/versions/99999999999999999999', None,
                 400, r'Failed to convert version'),
    pytest.param('put', 'PUT', '/v1/models/vec:predict', GOOD_VEC, 400, r'Malformed request: PUT'),
    pytest.param('delete', 'DELETE', '/v1/models/vec', None, 400, r'Malformed request: DELETE'),
    pytest.param('v1-other-path', 'GET', '/v1/health', None, 400, r'Malformed request: GET /v1/health'),
    pytest.param('list-models', 'GET', '/v1/models', None, 400, r'Missing model name in request'),
    pytest.param('mismatched-rows-batching', 'POST', '/v1/models/multi:predict',
                 {'inputs': {'amount': [1.0, 2.0], 'count': [1], 'tag': ['a'], 'flag': [True]}}, 400,
                 r'0th-dimension size'),
]


def _rows(cases):
    "pytest params from case rows: plain tuples `(id, *values)`, or pytest.param(id, *values) rows."
    for c in cases:
        if hasattr(c, 'marks'): yield pytest.param(*c.values[1:], marks=c.marks, id=c.values[0])   # a ParameterSet (a tuple too)
        else: yield pytest.param(*c[1:], id=c[0])


@pytest.mark.parametrize('method,path,body,status,pattern', list(_rows(REST_CASES)))
def test_rest_bad_request(server, method, path, body, status, pattern):
    "Each bad request gets TF Serving's status and `{\"error\": ...}` body; the server then answers a good predict correctly."
    resp = raw(server, method, path, body)
    assert_alive(server)
    tf_error(resp, status, pattern)


def test_rest_known_bad_inputs_leave_server_serving(server):
    "Every bad request above, replayed back to back, leaves the server answering good predicts correctly."
    for row in _rows(REST_CASES):
        method, path, body = row.values[:3]
        code, _, _ = raw(server, method, path, body)
        assert 200 <= code < 600
        assert_alive(server)


def test_rest_oversize_body(server):
    "A body over max_body is refused with 413 and an error JSON, whether its length is declared or it comes chunked."
    big = json.dumps({'instances': [[1.0, 2.0, 3.0]] * (MAX_BODY // 10)}).encode()
    assert len(big) > MAX_BODY
    tf_error(raw(server, 'POST', '/v1/models/vec:predict', big), 413, r'larger than')
    assert_alive(server)
    chunks = iter([big[i:i + 8192] for i in range(0, len(big), 8192)])
    tf_error(raw(server, 'POST', '/v1/models/vec:predict', chunks), 413, r'larger than')
    assert_alive(server)
    # just under the limit is read and judged on its content (here: too many rows for the batcher)
    fits = json.dumps({'instances': [[1, 2, 3]] * ((MAX_BODY - 100) // 11)}).encode()
    assert len(fits) <= MAX_BODY
    tf_error(raw(server, 'POST', '/v1/models/vec:predict', fits), 400, r'Task size')
    assert_alive(server)


# --- fuzz ----------------------------------------------------------------------------------------------------------------

FUZZ_GOOD = [('/v1/models/vec:predict', {'instances': [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}),
             ('/v1/models/vec/labels/stable:predict', {'inputs': [[1, 2, 3]]}),
             ('/v1/models/vec/versions/2:predict', {'signature_name': 'serving_default', 'instances': [[1, 2, 3]]}),
             ('/v1/models/multi:predict', {'instances': [multi_row(), multi_row(tag='électronique', flag=False)]}),
             ('/v1/models/multi:predict', {'inputs': {'amount': [1.5], 'count': [2], 'tag': ['abc'], 'flag': [False]}}),
             ('/v1/models/blob:predict', {'instances': [{'b64': 'AP8='}, 'text']}),
             ('/v1/models/scale:predict', {'inputs': [[1, 2, 3]]})]
FUZZ_STRINGS = ['', 'abc', 'électronique', '日本語', '😀', 'instances', 'inputs', 'b64', 'signature_name', 'serving_default',
                '\x00', '"\\', 'NaN', 'AP8=', 'x' * 50]

class _Deep:
    "A JSON array nested 3,000 deep, spliced into a body as text (Python's own json module cannot build it)."
DEEP = _Deep()

def rand_json(rng:random.Random, depth:int=0):
    """A random JSON value, including integers beyond int32 and int64, huge floats, lone surrogates and deep nesting."""
    kinds = ['null', 'bool', 'int', 'float', 'special', 'str', 'b64'] + (['list', 'list', 'dict'] if depth < 5 else ['deep'])
    k = rng.choice(kinds)
    if k == 'null': return None
    if k == 'bool': return rng.random() < 0.5
    if k == 'int': return rng.choice([0, 1, -1, 3, 2 ** 31 - 1, -2 ** 31, 2 ** 40, -2 ** 70, rng.randint(-1000, 1000)])
    if k == 'float': return rng.choice([0.5, -1.25, 1e9, -3e-30, 1e30, -1e300, rng.uniform(-1e6, 1e6)])
    if k == 'deep': return DEEP if rng.random() < 0.05 else [[[]]]
    if k == 'special': return rng.choice([math.nan, math.inf, -math.inf])
    if k == 'str': return rng.choice([*FUZZ_STRINGS, '\ud800', 'a\udfffb'])
    if k == 'b64': return {'b64': rng.choice(['AP8=', '', '!!', 'QUJD', 5])}
    if k == 'list': return [rand_json(rng, depth + 1) for _ in range(rng.choice([0, 1, 1, 2, 3, 3, 9]))]
    return {rng.choice(['x', 'amount', 'count', 'tag', 'flag', 'data', 'b64', 'instances', 'inputs', 'zz']): rand_json(rng, depth + 1)
            for _ in range(rng.randint(0, 4))}

def mutate(rng:random.Random, doc, leaf:bool=False):
    "Replace, drop or wrap one random node of a good request document (with `leaf`: replace one scalar by a random scalar)."
    doc = copy.deepcopy(doc)
    path, node = [], doc
    while isinstance(node, (list, dict)) and node and (leaf or rng.random() < 0.75):
        key = rng.randrange(len(node)) if isinstance(node, list) else rng.choice(list(node))
        path.append(key); node = node[key]
    if not path: return rand_json(rng)
    parent = doc
    for key in path[:-1]: parent = parent[key]
    op = 0.0 if leaf else rng.random()
    if op < 0.6: parent[path[-1]] = rand_json(rng, depth=5 if leaf else 0)
    elif op < 0.8: parent[path[-1]] = [parent[path[-1]]]
    elif isinstance(parent, dict): del parent[path[-1]]
    else: parent.pop(path[-1])
    return doc

def _dumps(doc, ensure_ascii:bool)->bytes:
    "JSON text of `doc` with DEEP markers expanded to 3,000 nested brackets; lone surrogates kept."
    text = json.dumps(doc, ensure_ascii=ensure_ascii, default=lambda o: '__DEEP__')
    return text.replace('"__DEEP__"', '[' * 3000 + ']' * 3000).encode('utf-8', 'surrogatepass')

def fuzz_bodies(seed:int=20240611, n:int=400):
    "(kind, url, body) triples: random bytes, truncated good bodies, random JSON documents, mutated good documents and good documents with one scalar changed."
    rng = random.Random(seed)
    for i in range(n):
        url, good = rng.choice(FUZZ_GOOD)
        kind = ('bytes', 'truncated', 'random-json', 'mutated', 'leaf')[i % 5]
        if kind == 'bytes':
            body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        elif kind == 'truncated':
            text = json.dumps(good).encode()
            body = text[:rng.randint(0, len(text) - 1)]
        elif kind == 'random-json':
            doc = rand_json(rng) if rng.random() < 0.3 else {rng.choice(['instances', 'inputs', 'signature_name', 'zz']): rand_json(rng)
                                                               for _ in range(rng.randint(0, 3))}
            body = _dumps(doc, rng.random() < 0.5)
        else:
            body = _dumps(mutate(rng, good, leaf=kind == 'leaf'), rng.random() < 0.5)
        yield kind, url, body


def test_rest_fuzz(server):
    "A few hundred seeded random bodies: every answer is a 4xx with TF Serving's error JSON (or, for a mutation that is still a valid request, a 200 prediction), never a 5xx."
    seen = Counter()
    for kind, url, body in fuzz_bodies():
        code, ctype, out = raw(server, 'POST', url, body)
        seen[code] += 1
        if code == 200:
            assert kind in ('mutated', 'leaf', 'random-json'), (kind, url, body[:200], out[:200])
            doc = json.loads(out)
            assert set(doc) in ({'predictions'}, {'outputs'}), (body[:200], out[:200])
        else:
            assert 400 <= code < 500, (kind, url, body[:300], code, out[:300])
            tf_error((code, ctype, out), code)
    assert seen[400] > 250 and seen[200] > 10, seen
    assert_alive(server)


# --- 2. bad gRPC input ---------------------------------------------------------------------------------------------------

def _bad_tensor(dtype, dims=(), content=None, float_val=None):
    t = tensor_pb2.TensorProto(dtype=dtype)
    for d in dims: t.tensor_shape.dim.add(size=d)
    if content is not None: t.tensor_content = content
    if float_val is not None: t.float_val.extend(float_val)
    return t

SC = grpc.StatusCode
GRPC_CASES = [
    ('unknown-model', 'Predict', lambda: predict_req('nope'), SC.NOT_FOUND, r'Servable not found for request: Latest\(nope\)'),
    ('unknown-version', 'Predict', lambda: predict_req(version=9), SC.NOT_FOUND, r'Specific\(vec, 9\)'),
    ('unknown-label', 'Predict', lambda: predict_req(label='beta'), SC.INVALID_ARGUMENT, r'Unrecognized servable version label: beta'),
    ('unknown-signature', 'Predict', lambda: predict_req(signature='nope'), SC.FAILED_PRECONDITION, r'Serving signature key "nope" not found'),
    ('missing-input', 'Predict', lambda: predict_req(inputs={}), SC.INVALID_ARGUMENT, None),
    ('extra-input', 'Predict', lambda: predict_req(inputs={'x': np.ones((1, 3), np.float32), 'y': np.ones(1, np.float32)}),
     SC.INVALID_ARGUMENT, None),
    ('rows-disagree', 'Predict', lambda: predict_req('multi', inputs={'amount': np.ones(1, np.float32), 'count': np.ones(2, np.int32),
                                                                     'tag': np.array([b'a'], object), 'flag': np.ones(1, bool)}),
     SC.INVALID_ARGUMENT, r'0th-dimension'),
    ('scalar', 'Predict', lambda: predict_req(inputs={'x': np.float32(1)}), SC.INVALID_ARGUMENT, None),
    ('string-for-float', 'Predict', lambda: predict_req(inputs={'x': np.array([[b'a', b'b', b'c']], object)}), SC.INVALID_ARGUMENT, None),
    ('corrupt-tensor-content', 'Predict', lambda: predict_req(inputs={'x': _bad_tensor(types_pb2.DT_FLOAT, (1, 3), content=b'12345')}),
     SC.INVALID_ARGUMENT, None),
    ('negative-dim', 'Predict', lambda: predict_req(inputs={'x': _bad_tensor(types_pb2.DT_FLOAT, (-5,))}), SC.INVALID_ARGUMENT, None),
    ('invalid-dtype', 'Predict', lambda: predict_req(inputs={'x': _bad_tensor(types_pb2.DT_INVALID, (1, 3))}), SC.INVALID_ARGUMENT, None),
    ('rows-over-max-batch', 'Predict', lambda: predict_req(inputs={'x': np.ones((MAX_BATCH + 1, 3), np.float32)}), SC.INVALID_ARGUMENT,
     rf'Task size {MAX_BATCH + 1} is larger than maximum input batch size {MAX_BATCH}'),
    ('many-rows', 'Predict', lambda: predict_req(inputs={'x': np.ones((2000, 3), np.float32)}), SC.INVALID_ARGUMENT, r'Task size 2000'),
    ('message-over-max', 'Predict', lambda: predict_req(inputs={'x': np.ones((100000, 3), np.float32)}), SC.RESOURCE_EXHAUSTED,
     r'Received message larger than max'),
    ('unknown-output-filter', 'Predict', lambda: predict_req(output_filter=['nope']), SC.INVALID_ARGUMENT, r'nope'),
    ('metadata-other-field', 'GetModelMetadata',
     lambda: get_model_metadata_pb2.GetModelMetadataRequest(model_spec={'name': 'vec'}, metadata_field=['graph']), SC.INVALID_ARGUMENT, None),
    ('metadata-no-field', 'GetModelMetadata', lambda: get_model_metadata_pb2.GetModelMetadataRequest(model_spec={'name': 'vec'}),
     SC.INVALID_ARGUMENT, None),
    ('metadata-unknown-model', 'GetModelMetadata',
     lambda: get_model_metadata_pb2.GetModelMetadataRequest(model_spec={'name': 'nope'}, metadata_field=['signature_def']), SC.NOT_FOUND, None),
    ('classify-predict-signature', 'Classify', lambda: classification_pb2.ClassificationRequest(model_spec={'name': 'vec'}),
     SC.INVALID_ARGUMENT, r'No classification inputs found in SignatureDef'),
    ('regress-predict-signature', 'Regress', lambda: regression_pb2.RegressionRequest(model_spec={'name': 'vec'}),
     SC.INVALID_ARGUMENT, r'No regression inputs found in SignatureDef'),
    ('regress-unknown-model', 'Regress', lambda: regression_pb2.RegressionRequest(model_spec={'name': 'nope'}), SC.NOT_FOUND, None),
    ('classify-unknown-label', 'Classify', lambda: classification_pb2.ClassificationRequest(model_spec={'name': 'vec', 'version_label': 'zz'}),
     SC.INVALID_ARGUMENT, None),
    ('status-unknown-model', 'GetModelStatus', lambda: get_model_status_pb2.GetModelStatusRequest(model_spec={'name': 'nope'}),
     SC.NOT_FOUND, r'Could not find any versions of model nope'),
    ('status-unknown-version', 'GetModelStatus',
     lambda: get_model_status_pb2.GetModelStatusRequest(model_spec={'name': 'vec', 'version': {'value': 7}}), SC.NOT_FOUND, None),
    ('status-unknown-label', 'GetModelStatus',
     lambda: get_model_status_pb2.GetModelStatusRequest(model_spec={'name': 'vec', 'version_label': 'zz'}), SC.INVALID_ARGUMENT, None),
    ('multi-inference-no-task', 'MultiInference', lambda: inference_pb2.MultiInferenceRequest(), SC.INVALID_ARGUMENT, r'ModelSpec has no name specified'),
    # ---- cases where the server once differed from TF Serving (found by these tests, fixed) ----
    pytest.param('int64-for-float', 'Predict', lambda: predict_req(inputs={'x': np.array([[1, 2, 3]], np.int64)}), SC.INVALID_ARGUMENT,
                 r'float.*int64|int64.*float'),
    pytest.param('resource-dtype', 'Predict', lambda: predict_req(inputs={'x': _bad_tensor(types_pb2.DT_RESOURCE, (1,))}),
                 SC.INVALID_ARGUMENT, None),
    pytest.param('empty-model-name', 'Predict', lambda: predict_req(''), SC.INVALID_ARGUMENT, r'ModelSpec has no name specified'),
]

@pytest.mark.parametrize('method,make,code,pattern', list(_rows(GRPC_CASES)))
def test_grpc_bad_request(channel, method, make, code, pattern):
    "Each bad gRPC request gets TF Serving's status code (and message); the server then still predicts."
    stub = (model_service_pb2_grpc.ModelServiceStub(channel) if method == 'GetModelStatus'
            else prediction_service_pb2_grpc.PredictionServiceStub(channel))
    got, details = grpc_code(getattr(stub, method), make())
    grpc_alive(channel)
    assert got == code, (got, details)
    if pattern: assert re.search(pattern, details), details


def test_inputs_are_fed_as_given(server, channel):
    """TF Serving does not hold a tensor to the shape in the signature: it feeds the tensor as given and lets the model decide
    (predict_util.cc passes the request's tensors to Session::Run). vec sums its last axis, so rows of any length, or an extra
    axis, are its business; what it cannot compute is the model's own error (INVALID_ARGUMENT)."""
    assert json.loads(raw(server, 'POST', '/v1/models/vec:predict', {'instances': [[1, 2]]})[2]) == {'predictions': [206.0]}
    assert json.loads(raw(server, 'POST', '/v1/models/vec:predict', {'inputs': [[[1, 2, 3]]]})[2]) == {'outputs': [[212.0]]}
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    out = stub.Predict(predict_req(inputs={'x': np.ones((2, 5), np.float32)}), timeout=30).outputs
    assert [tf.make_ndarray(v).tolist() for v in out.values()] == [[210.0, 210.0]]
    code, details = grpc_code(stub.Predict, predict_req(inputs={'x': np.float32(1)}))   # a scalar: the model's own error
    assert code == SC.INVALID_ARGUMENT, (code, details)


# --- 3. b64 and NaN / Infinity -------------------------------------------------------------------------------------------

PAYLOADS = [b'\x00\xff\xfe binary \x80', b'', 'héllo wörld'.encode(), bytes(range(256))]

def test_b64_round_trip(server, channel):
    "`{\"b64\": ...}` inputs reach the model as the raw bytes, and `_bytes` outputs come back b64-encoded, in both formats."
    b64 = lambda b: {'b64': base64.b64encode(b).decode()}
    unb64 = lambda v: base64.b64decode(v['b64'])
    code, _, out = raw(server, 'POST', '/v1/models/blob:predict', {'instances': [b64(p) for p in PAYLOADS]})
    assert code == 200, out[:300]
    preds = json.loads(out)['predictions']
    assert [unb64(p['echo_bytes']) for p in preds] == [p * 2 for p in PAYLOADS]
    assert [p['size'] for p in preds] == [len(p) for p in PAYLOADS]
    code, _, out = raw(server, 'POST', '/v1/models/blob:predict', {'inputs': [b64(p) for p in PAYLOADS]})
    assert code == 200, out[:300]
    outs = json.loads(out)['outputs']
    assert [unb64(v) for v in outs['echo_bytes']] == [p * 2 for p in PAYLOADS] and outs['size'] == [len(p) for p in PAYLOADS]
    # plain JSON strings are UTF-8 bytes; b64 and plain strings mix in one request
    code, _, out = raw(server, 'POST', '/v1/models/blob:predict', {'instances': [b64(b'\x01'), 'é']})
    assert code == 200, out[:300]
    assert [unb64(p['echo_bytes']) for p in json.loads(out)['predictions']] == [b'\x01\x01', 'éé'.encode()]
    # gRPC carries the bytes as they are
    resp = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        predict_req('blob', {'data': np.array(PAYLOADS, object)}), timeout=30)
    assert list(tf.make_ndarray(resp.outputs['echo_bytes'])) == [p * 2 for p in PAYLOADS]


def test_nan_infinity_round_trip(server, channel):
    "NaN, Infinity and -Infinity are accepted in request JSON and written back the same way (row and columnar), and over gRPC."
    body = b'{"instances": [[NaN, Infinity, -Infinity], [1.5, -0.0, 1e38]]}'
    code, _, out = raw(server, 'POST', '/v1/models/scale:predict', body)
    assert code == 200, out[:300]
    assert b'NaN' in out and b'-Infinity' in out
    (a, b), = [json.loads(out)['predictions']]
    assert math.isnan(a[0]) and a[1] == math.inf and a[2] == -math.inf
    np.testing.assert_allclose(b, [3.0, -0.0, 2e38], rtol=1e-6)
    code, _, out = raw(server, 'POST', '/v1/models/scale:predict', b'{"inputs": [[-Infinity, NaN, 0.25]]}')
    assert code == 200, out[:300]
    (c,), = [json.loads(out)['outputs']]
    assert c[0] == -math.inf and math.isnan(c[1]) and c[2] == 0.5
    resp = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        predict_req('scale', {'x': np.array([[np.nan, np.inf, -np.inf]], np.float32)}), timeout=30)
    got = tf.make_ndarray(resp.outputs['output_0'])
    assert np.isnan(got[0, 0]) and got[0, 1] == np.inf and got[0, 2] == -np.inf


# --- 4. batching overflow ------------------------------------------------------------------------------------------------

@pytest.fixture
def slow_server(lib, tmp_path):
    cfg = server_config(model_config('slow', lib/'slow'))
    srv = start_server(tmp_path/'cfg', cfg, batching_parameters(max_batch_size=1, num_batch_threads=1, max_enqueued_batches=1,
                                                                batch_timeout_micros=0), poll_seconds=0)
    yield srv
    srv.stop()


def test_batching_queue_full_sheds_load(slow_server):
    """Many concurrent requests to a slow model behind a 1-deep batch queue: some are refused with the queue-full error as TF
    Serving refuses them (TensorFlow's shared batch scheduler returns UNAVAILABLE "The batch scheduling queue to which this
    task was submitted is full": HTTP 503 + error JSON over REST, UNAVAILABLE over gRPC), the others get their own answer,
    and no other error comes back."""
    srv, n = slow_server, 24
    code, _, out = raw(srv, 'POST', '/v1/models/slow:predict', {'instances': [[7.0]]})
    assert code == 200 and json.loads(out) == {'predictions': [[7.0]]}
    gate = threading.Barrier(n)
    def rest(i):
        gate.wait(30)
        return i, raw(srv, 'POST', '/v1/models/slow:predict', {'instances': [[float(i)]]}, timeout=60)
    with cf.ThreadPoolExecutor(n) as ex: results = list(ex.map(rest, range(n)))
    codes = Counter(r[0] for _, r in results)
    assert set(codes) <= {200, 503}, codes
    assert codes[503] >= 1 and codes[200] >= 1, codes
    for i, r in results:
        if r[0] == 200: assert json.loads(r[2]) == {'predictions': [[float(i)]]}
        else: tf_error(r, 503, r'batch scheduling queue.*full')
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(srv.grpc_target))
    gate = threading.Barrier(n)
    def rpc(i):
        gate.wait(30)
        try: resp = stub.Predict(predict_req('slow', {'x': np.array([[float(i)]], np.float32)}), timeout=60)
        except grpc.RpcError as e: return i, e.code(), e.details()
        return i, SC.OK, float(tf.make_ndarray(resp.outputs['output_0'])[0, 0])
    with cf.ThreadPoolExecutor(n) as ex: results = list(ex.map(rpc, range(n)))
    codes = Counter(r[1] for r in results)
    assert set(codes) <= {SC.OK, SC.UNAVAILABLE}, results
    assert codes[SC.UNAVAILABLE] >= 1 and codes[SC.OK] >= 1, codes
    assert all(v == float(i) for i, c, v in results if c == SC.OK)
    code, _, out = raw(srv, 'POST', '/v1/models/slow:predict', {'instances': [[8.0]]})
    assert code == 200 and json.loads(out) == {'predictions': [[8.0]]}


# --- 5. rollout under traffic --------------------------------------------------------------------------------------------

class Traffic:
    "Requests sent continuously from two threads (REST and gRPC) to the latest version of `name`; every answer recorded."
    VALUE = {112.0: 1, 212.0: 2, 312.0: 3}
    def __init__(self, srv:ModelServer, name:str):
        self.srv, self.name, self.stop_event, self.log = srv, name, threading.Event(), {'rest': [], 'grpc': []}
        self.threads = [threading.Thread(target=self._rest, daemon=True), threading.Thread(target=self._grpc, daemon=True)]
    def __enter__(self):
        for t in self.threads: t.start()
        return self
    def __exit__(self, *exc):
        self.stop_event.set()
        for t in self.threads: t.join(30)
    def _rest(self):
        with httpx.Client(base_url=self.srv.rest_url, timeout=30) as c:
            while not self.stop_event.is_set():
                try:
                    r = c.post(f'/v1/models/{self.name}:predict', json=GOOD_VEC)
                    pred = r.json().get('predictions', [None])[0] if r.status_code == 200 else None
                    self.log['rest'].append(self.VALUE[pred] if pred in self.VALUE else ('FAIL', r.status_code, r.text[:200]))
                except Exception as e: self.log['rest'].append(('FAIL', repr(e)))
    def _grpc(self):
        ch = grpc.insecure_channel(self.srv.grpc_target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        while not self.stop_event.is_set():
            try:
                resp = stub.Predict(predict_req(self.name), timeout=30)
                v = resp.model_spec.version.value
                ok = float(tf.make_ndarray(resp.outputs['output_0'])[0]) == 100.0 * v + 12
                self.log['grpc'].append(v if ok else ('FAIL', 'wrong output for version', v))
            except grpc.RpcError as e: self.log['grpc'].append(('FAIL', e.code(), e.details()))
        ch.close()
    def versions(self)->dict: return {k: [x for x in v if not isinstance(x, tuple)] for k, v in self.log.items()}
    def failures(self)->list: return [x for v in self.log.values() for x in v if isinstance(x, tuple)]
    def wait_for(self, version:int, timeout:float=30):
        "Wait until both threads have been answered by `version` since now."
        start = {k: len(v) for k, v in self.log.items()}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(version in v[start[k]:] for k, v in self.log.items()): return
            time.sleep(0.02)
        raise AssertionError(f"version {version} never answered: {[v[-5:] for v in self.log.values()]}")


def status_of(srv:ModelServer, name:str)->dict:
    code, _, body = raw(srv, 'GET', f'/v1/models/{name}')
    assert code == 200, body
    return {int(s['version']): s for s in json.loads(body)['model_version_status']}

def wait_status(srv:ModelServer, name:str, want:dict, timeout:float=30)->dict:
    "Wait until the versions listed in `want` are in those states."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status_of(srv, name)
        if all(v in st and st[v]['state'] == s for v, s in want.items()): return st
        time.sleep(0.05)
    raise AssertionError(f"{name}: wanted {want}, status is {st}")


def test_rollout_under_traffic(lib, tmp_path):
    """With the config file polled every 0.2 s, a new version folder (copied in atomically) and a config switched to it
    take over with no failed request over REST or gRPC; each client moves from v1 to v2 once and never back."""
    base = tmp_path/'models'/'roll'; base.mkdir(parents=True)
    copy_version(lib, 'vec', 1, base)
    srv = start_server(tmp_path/'cfg', server_config(model_config('roll', base, [1])),
                       batching_parameters(max_batch_size=8, batch_timeout_micros=2000), poll_seconds=0.2)
    try:
        with Traffic(srv, 'roll') as traffic:
            traffic.wait_for(1)
            copy_version(lib, 'vec', 2, base)
            time.sleep(0.5)                                  # a folder outside the specific policy is not served
            assert status_of(srv, 'roll').keys() == {1}
            traffic.wait_for(1)
            write_text_proto(server_config(model_config('roll', base, [2])), tmp_path/'cfg'/'models.config')
            traffic.wait_for(2)
            st = wait_status(srv, 'roll', {1: 'END', 2: 'AVAILABLE'})
            time.sleep(0.3)
        assert traffic.failures() == [], traffic.failures()[:5]
        for api, vs in traffic.versions().items():
            assert len(vs) > 5 and vs[0] == 1 and vs[-1] == 2, (api, len(vs), vs[:3], vs[-3:])
            switch = vs.index(2)
            assert set(vs[:switch]) == {1} and set(vs[switch:]) == {2}, (api, vs)
        assert st[2]['status'] == {'error_code': 'OK', 'error_message': ''}
    finally: srv.stop()


def test_broken_version_keeps_previous_serving(lib, tmp_path):
    """A new version whose saved_model.pb is garbage fails to load: the previous version keeps serving every request, and
    GET /v1/models/<name> lists the broken version in state END with an error code and message."""
    base = tmp_path/'models'/'roll'; base.mkdir(parents=True)
    copy_version(lib, 'vec', 2, base)
    srv = start_server(tmp_path/'cfg', server_config(model_config('roll', base)), poll_seconds=0.2, load_retries=0)   # END at once, not after TF Serving's 5 retries a minute apart
    try:
        with Traffic(srv, 'roll') as traffic:
            traffic.wait_for(2)
            write_broken_version(base, 3)                    # the latest policy now wants version 3
            st = wait_status(srv, 'roll', {3: 'END'})
            traffic.wait_for(2)
        assert traffic.failures() == [], traffic.failures()[:5]
        assert all(set(vs) == {2} for vs in traffic.versions().values())
        assert st[2]['state'] == 'AVAILABLE' and st[2]['status']['error_code'] == 'OK'
        assert st[3]['status']['error_code'] != 'OK' and st[3]['status']['error_message'], st[3]
        # gRPC GetModelStatus says the same
        ms = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(srv.grpc_target))
        resp = ms.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={'name': 'roll', 'version': {'value': 3}}), timeout=30)
        (s,), = [resp.model_version_status]
        assert s.state == get_model_status_pb2.ModelVersionStatus.END and s.status.error_code != 0 and s.status.error_message
        tf_error(raw(srv, 'POST', '/v1/models/roll/versions/3:predict', GOOD_VEC), 404, r'Specific\(roll, 3\)')
    finally: srv.stop()


def test_in_flight_request_finishes_when_its_version_is_retired(lib, tmp_path):
    base = tmp_path/'models'/'rl'; base.mkdir(parents=True)
    for v in (1, 2): copy_version(lib, 'vec', v, base)
    srv = start_server(tmp_path/'cfg', server_config(model_config('rl', base, [1, 2])),
                       batching_parameters(max_batch_size=8, batch_timeout_micros=3_000_000), poll_seconds=0)
    try:
        with cf.ThreadPoolExecutor(1) as ex:
            pending = ex.submit(raw, srv, 'POST', '/v1/models/rl/versions/1:predict', GOOD_VEC)
            v1, deadline = srv.serving.manager.models['rl'][1], time.monotonic() + 30
            while v1._inflight == 0:                         # the request holds version 1 and waits in the batch queue (3 s timeout)
                assert time.monotonic() < deadline and not pending.done(), pending.result() if pending.done() else 'no hold'
                time.sleep(0.005)
            code, resp, _ = reload(srv, server_config(model_config('rl', base, [2])))
            assert code == SC.OK and resp.status.error_code == 0
            status, _, body = pending.result(30)
        assert (status, json.loads(body)) == (200, {'predictions': [112.0]})
    finally: srv.stop()


# --- 6. HandleReloadConfigRequest ----------------------------------------------------------------------------------------

@pytest.fixture
def reload_server(lib, tmp_path):
    "Model 'rl' with versions 1, 2, 3 on disk, serving [1]; the config file is not polled."
    base = tmp_path/'models'/'rl'; base.mkdir(parents=True)
    for v in (1, 2, 3): copy_version(lib, 'vec', v, base)
    srv = start_server(tmp_path/'cfg', server_config(model_config('rl', base, [1])), poll_seconds=0)
    srv.base = base
    yield srv
    srv.stop()

def reload(srv:ModelServer, cfg)->tuple[grpc.StatusCode, model_management_pb2.ReloadConfigResponse|None, str]:
    "HandleReloadConfigRequest: (gRPC status, the response if the call returned, the error details)."
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(srv.grpc_target))
    try: return SC.OK, stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=cfg), timeout=60), ''
    except grpc.RpcError as e: return e.code(), None, e.details() or ''

def served(srv:ModelServer, name:str='rl', **spec)->int:
    "The version that answers a gRPC predict for `name` (latest, or a version / label)."
    resp = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(srv.grpc_target)).Predict(predict_req(name, **spec), timeout=30)
    v = resp.model_spec.version.value
    assert float(tf.make_ndarray(resp.outputs['output_0'])[0]) == 100.0 * v + 12
    return v

def grpc_states(srv:ModelServer, name:str='rl')->dict:
    ms = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(srv.grpc_target))
    resp = ms.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={'name': name}), timeout=30)
    return {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state) for s in resp.model_version_status}


def test_grpc_reload_switches_versions(reload_server):
    "HandleReloadConfigRequest replaces the config: versions load and unload as it says, and labels follow (two steps)."
    srv = reload_server
    assert served(srv) == 1
    code, resp, _ = reload(srv, server_config(model_config('rl', srv.base, [2])))
    assert code == SC.OK and resp.status.error_code == 0, resp
    assert served(srv) == 2
    assert grpc_states(srv) == {1: 'END', 2: 'AVAILABLE'}
    tf_error(raw(srv, 'POST', '/v1/models/rl/versions/1:predict', GOOD_VEC), 404, r'Specific\(rl, 1\)')
    code, resp, _ = reload(srv, server_config(model_config('rl', srv.base, [2, 3], labels={'stable': 2})))
    assert code == SC.OK and resp.status.error_code == 0, resp
    code, resp, _ = reload(srv, server_config(model_config('rl', srv.base, [2, 3], labels={'stable': 2, 'canary': 3})))
    assert code == SC.OK and resp.status.error_code == 0, resp
    assert (served(srv), served(srv, label='stable'), served(srv, label='canary')) == (3, 2, 3)
    code, _, out = raw(srv, 'POST', '/v1/models/rl/labels/canary:predict', GOOD_VEC)
    assert code == 200 and json.loads(out) == {'predictions': [312.0]}
    assert grpc_states(srv) == {1: 'END', 2: 'AVAILABLE', 3: 'AVAILABLE'}


def test_grpc_reload_label_on_unloaded_version_is_refused(reload_server):
    """A reload whose label points at a version that is not loaded (and cannot be: no such folder) comes back non-OK
    (FAILED_PRECONDITION, as a gRPC error or in the response's status) and leaves the old config serving."""
    srv = reload_server
    code, resp, _ = reload(srv, server_config(model_config('rl', srv.base, [1, 2])))             # load 2, then label it
    assert code == SC.OK and resp.status.error_code == 0, resp
    code, resp, _ = reload(srv, server_config(model_config('rl', srv.base, [1, 2], labels={'stable': 1, 'canary': 2})))
    assert code == SC.OK and resp.status.error_code == 0, resp
    code, resp, details = reload(srv, server_config(model_config('rl', srv.base, [1, 2], labels={'stable': 9})))
    if code == SC.OK:
        assert resp.status.error_code == SC.FAILED_PRECONDITION.value[0], resp
        details = resp.status.error_message
    else: assert code == SC.FAILED_PRECONDITION, (code, details)
    assert '9' in details, details
    assert (served(srv), served(srv, label='stable'), served(srv, label='canary')) == (2, 1, 2)
    assert grpc_states(srv) == {1: 'AVAILABLE', 2: 'AVAILABLE'}


def test_grpc_reload_error_is_a_grpc_error(reload_server):
    srv = reload_server
    code, _, details = reload(srv, server_config(model_config('rl', srv.base, [1], labels={'stable': 9})))
    assert code == SC.FAILED_PRECONDITION, code
    assert 'not currently available' in details, details


def test_grpc_reload_cannot_load_and_label_in_one_change(reload_server):
    srv = reload_server
    code, resp, _ = reload(srv, server_config(model_config('rl', srv.base, [1, 2], labels={'canary': 2})))
    assert code == SC.FAILED_PRECONDITION or (resp is not None and resp.status.error_code == SC.FAILED_PRECONDITION.value[0]), resp
    got, _ = grpc_code(prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(srv.grpc_target)).Predict,
                       predict_req('rl', label='canary'))
    assert got == SC.INVALID_ARGUMENT


def test_config_file_poll_overrides_grpc_reload(lib, tmp_path):
    base = tmp_path/'models'/'rl'; base.mkdir(parents=True)
    for v in (1, 2): copy_version(lib, 'vec', v, base)
    srv = start_server(tmp_path/'cfg', server_config(model_config('rl', base, [1])), poll_seconds=0.2)
    try:
        code, resp, _ = reload(srv, server_config(model_config('rl', base, [2])))
        assert code == SC.OK and resp.status.error_code == 0
        deadline = time.monotonic() + 30                 # a poll (0.2 s) and a SavedModel load; a slow machine takes longer
        while time.monotonic() < deadline and served(srv) != 1: time.sleep(0.1)
        assert served(srv) == 1
    finally: srv.stop()


# --- 7. metrics -----------------------------------------------------------------------------------------------------------

def request_counts(srv:ModelServer)->Counter:
    "(model_name, entrypoint, status) -> requests, from the Prometheus text at the monitoring path."
    code, ctype, body = raw(srv, 'GET', '/monitoring/prometheus/metrics')
    assert code == 200 and ctype.startswith('text/plain'), (code, ctype)
    out = Counter()
    for fam in text_string_to_metric_families(body.decode()):
        if fam.name != ':tensorflow:serving:request_count': continue
        assert fam.type == 'counter'
        for s in fam.samples:
            if s.name in (fam.name, fam.name + '_total'):
                out[s.labels['model_name'], s.labels.get('entrypoint', ''), s.labels['status']] += s.value
    return out


def test_metrics_count_requests_by_status(server, channel):
    "The metrics endpoint serves Prometheus text where :tensorflow:serving:request_count counts requests by model and status."
    before = request_counts(server)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for _ in range(3): stub.Predict(predict_req('scale'), timeout=30)
    for req, code in ((predict_req('scale', version=9), SC.NOT_FOUND), (predict_req('scale', inputs={'x': np.ones((1, 3), np.float64)}), SC.INVALID_ARGUMENT),
                      (predict_req('scale', signature='nope'), SC.FAILED_PRECONDITION)):
        assert grpc_code(stub.Predict, req)[0] == code
    for _ in range(2): assert raw(server, 'POST', '/v1/models/scale:predict', {'inputs': [[1, 2, 3]]})[0] == 200
    delta = request_counts(server) - before
    assert delta == Counter({('scale', '', 'OK'): 5, ('scale', '', 'NOT_FOUND'): 1, ('scale', '', 'INVALID_ARGUMENT'): 1,
                             ('scale', '', 'FAILED_PRECONDITION'): 1}), delta   # TF Serving's labels: model_name and status


def test_rest_counts_failed_predicts_as_grpc_does(server, channel):
    """A predict is counted under the model it names with the status it ends with, over REST as over gRPC: an unknown
    model or version (404 over REST), an unknown label, signature or a bad input (400) count once each, by either API."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    cases = [   # (the gRPC request, the REST URL and body of the same predict, its HTTP code)
        (predict_req('nope'), '/v1/models/nope:predict', GOOD_VEC, 404),
        (predict_req(version=9), '/v1/models/vec/versions/9:predict', GOOD_VEC, 404),
        (predict_req(label='beta'), '/v1/models/vec/labels/beta:predict', GOOD_VEC, 400),
        (predict_req(signature='nope'), '/v1/models/vec:predict', {'signature_name': 'nope', **GOOD_VEC}, 400),
        (predict_req(inputs={'x': np.ones((1, 3), np.float64)}), '/v1/models/vec:predict', {'instances': [['a', 'b', 'c']]}, 400),
        (predict_req(), '/v1/models/vec:predict', GOOD_VEC, 200)]
    def counted(send)->Counter:
        before = request_counts(server); send(); return request_counts(server) - before
    grpc_counts = counted(lambda: [grpc_code(stub.Predict, req) for req, *_ in cases])
    rest_codes = []
    rest_counts = counted(lambda: rest_codes.extend(raw(server, 'POST', url, body)[0] for _, url, body, _ in cases))
    assert rest_codes == [code for *_, code in cases], rest_codes
    assert grpc_counts == rest_counts == Counter({('nope', '', 'NOT_FOUND'): 1, ('vec', '', 'NOT_FOUND'): 1, ('vec', '', 'OK'): 1,
                                                  ('vec', '', 'INVALID_ARGUMENT'): 2, ('vec', '', 'FAILED_PRECONDITION'): 1}), \
        (grpc_counts, rest_counts)


def test_metrics_use_tf_serving_series_name(server, channel):
    prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict_req('scale'), timeout=30)
    text = raw(server, 'GET', '/monitoring/prometheus/metrics')[2].decode()
    lines = [l for l in text.splitlines() if l.startswith(':tensorflow:serving:request_count{')]
    assert any('model_name="scale"' in l and 'status="OK"' in l for l in lines), text[:2000]


# --- 8. the fast paths agree with the general ones -------------------------------------------------------------------------

def batch_count(srv:ModelServer, name:str)->float:
    "How many batches the server has run for model `name` (the batch-size histogram's count)."
    text = raw(srv, 'GET', '/monitoring/prometheus/metrics')[2].decode()
    m = re.search(r'^:tensorflow:serving:batching_session:batch_size_count\{model_name="%s"\} (\S+)$' % name, text, re.M)
    return float(m[1]) if m else 0.0

def test_grpc_requests_wait_for_their_batch_together(server, channel):
    "Concurrent one-row gRPC predicts (grpc.aio, waiting on the event loop) are run in shared batches, each answered with its own row."
    stub, n = prediction_service_pb2_grpc.PredictionServiceStub(channel), 32
    before, gate = batch_count(server, 'scale'), threading.Barrier(n)
    def call(i):
        gate.wait(30)
        x = np.array([[i, 2 * i, -i]], np.float32)
        return x, tf.make_ndarray(stub.Predict(predict_req('scale', {'x': x}), timeout=30).outputs['output_0'])
    with cf.ThreadPoolExecutor(n) as ex: results = list(ex.map(call, range(n)))
    for x, got in results: np.testing.assert_allclose(got, x * 2.0)
    assert batch_count(server, 'scale') - before < n, "every request ran alone"

def test_tensor_protos_as_tensorflow_converts_them():
    "to_ndarray / to_tensor_proto give what tf.make_ndarray / tf.make_tensor_proto give, over random shapes and dtypes."
    from mlinfra_nb.serve.codec import to_ndarray, to_tensor_proto
    rng = np.random.default_rng(7)
    for _ in range(300):
        shape = tuple(int(d) for d in rng.integers(0, 4, size=rng.integers(0, 4)))
        kind = rng.choice(['float32', 'float64', 'int32', 'int64', 'bool', 'string', 'float16', 'uint8'])
        a = (np.array([bytes(rng.integers(97, 123, size=rng.integers(0, 5)).astype(np.uint8)) for _ in range(math.prod(shape))], object).reshape(shape)
             if kind == 'string' else (rng.standard_normal(shape) * 100).astype(kind))
        tp = to_tensor_proto(a)
        assert tp == tf.make_tensor_proto(a), (kind, shape)
        got, want = to_ndarray(tp), tf.make_ndarray(tp)
        assert got.dtype == want.dtype and got.shape == want.shape and (got == want).all(), (kind, shape)
        for field in ('float_val', 'double_val', 'int_val', 'int64_val', 'bool_val', 'string_val'):   # typed fields, as other clients write them
            if a.size and getattr(want, 'size', 0) and kind in {'float_val': 'float32', 'double_val': 'float64', 'int_val': 'int32',
                                                                  'int64_val': 'int64', 'bool_val': 'bool', 'string_val': 'string'}[field]:
                typed = tensor_pb2.TensorProto(dtype=tp.dtype, tensor_shape=tp.tensor_shape)
                getattr(typed, field).extend(a.ravel().tolist())
                got, want = to_ndarray(typed), tf.make_ndarray(typed)
                assert got.dtype == want.dtype and got.shape == want.shape and (got == want).all(), (field, shape)

def test_parse_json_reads_as_json_does():
    "orjson reads strict JSON; everything else (NaN, Infinity, huge numbers, BOMs, bad text) gets json's answer or error."
    from mlinfra_nb.serve.codec import parse_json
    from mlinfra_nb.serve.models import ServingError
    docs = [b'{"instances": [1, 2.5, -0.0, 1e-7, 1e308]}', b'{"a": 1, "a": 2}', b'{"s": "\\u00e9\\ud83d\\ude00 caf\xc3\xa9"}',
            b'{"x": NaN, "y": [Infinity, -Infinity]}', b'{"big": 123456789012345678901234567890}', b'{"f": 1e400}',
            b'  {"ws": true}  ', b'{"n": null, "t": [true, false], "o": {}}', '{"text": "str input"}', b'\xef\xbb\xbf{"bom": 1}']
    for d in docs:
        got, want = parse_json(d), json.loads(d)
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), d
    for bad in [b'[1, 2]', b'"s"', b'{"a": 1', b'{"a": 1} x', b'{"s": "\xc3\x28"}', b'', b'{"a": 1, }']:
        with pytest.raises(ServingError): parse_json(bad)

def test_idle_batch_threads_sleep():
    "Batch threads with nothing queued wait for a request instead of waking every batch_timeout_micros."
    from mlinfra_nb.serve import server as S
    calls, due = Counter(), S._due_batch
    def counted(*a): calls['take'] += 1; return due(*a)
    S._due_batch = counted
    try:
        b = S.Batcher(batching_parameters(max_batch_size=8, batch_timeout_micros=1000, num_batch_threads=2))
        time.sleep(0.5)
        assert calls['take'] <= 6, calls   # polling every 1 ms would be ~1,000
        b.close()
    finally: S._due_batch = due

def test_grpc_port_in_use_is_refused(server, channel, lib):
    "A second server on a gRPC port in use fails with a clear error (the port is not shared), leaves no thread behind, and the first keeps serving."
    from mlinfra_nb.workspace import InvalidInput
    loops = lambda: sum(t.name == 'mlinfra-serve-grpc-loop' for t in threading.enumerate())
    before = loops()
    with pytest.raises(InvalidInput, match=f"cannot listen for gRPC on 127.0.0.1:{server.grpc_port}"):
        ModelServer(config=server_config(model_config('scale', lib/'scale')), rest_port=0, grpc_port=server.grpc_port, poll_seconds=0)
    assert loops() == before
    grpc_alive(channel)


def test_listens_only_where_asked(lib, tmp_path):
    "As the lake server: an empty host is refused, every interface needs allow_remote, and the URLs name the ports port 0 chose."
    import subprocess, sys
    from mlinfra_nb.workspace import InvalidInput
    cfg = server_config(model_config('scale', lib/'scale'))
    for host, msg in [('', "no address to listen on ('')"), ('0.0.0.0', "'0.0.0.0' listens on every network interface"),
                      ('::', "'::' listens on every network interface")]:
        with pytest.raises(InvalidInput, match=re.escape(msg)): ModelServer(config=cfg, host=host, rest_port=0, grpc_port=0)
    with ModelServer(config=cfg, host='0.0.0.0', allow_remote=True, rest_port=0, grpc_port=0, poll_seconds=0) as srv:
        assert srv.rest_url == f'http://0.0.0.0:{srv.rest_port}' and srv.grpc_target == f'0.0.0.0:{srv.grpc_port}'
        assert srv.rest_port > 0 and srv.grpc_port > 0
        assert httpx.get(f'http://127.0.0.1:{srv.rest_port}/v1/models/scale', timeout=30).status_code == 200
    for argv, msg in [(['--host', ''], "no address to listen on ('')"), (['--host', '0.0.0.0'], "'0.0.0.0' listens on every network interface")]:
        r = subprocess.run([sys.executable, '-c', 'import sys; from mlinfra_nb.cli import main; sys.exit(main())', 'serve', '--model_name', 'scale',
                            '--model_base_path', str(lib/'scale'), '--rest_api_port', '0', '--port', '0', *argv],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert r.returncode == 1 and r.stdout == '' and 'Traceback' not in r.stderr, r.stderr
        assert r.stderr.splitlines()[-1].startswith(f"mlinfra: error: {msg}"), r.stderr


# --- 9. second reader's defects (issue 21) --------------------------------------------------------------------------------

class Twice:
    "A stand-in servable: y = 2x, refusing inputs of three columns; `calls` holds the rows of each call."
    name, version = 'twice', 1
    def __init__(self): self.calls = []
    def run(self, sig, inputs):
        if inputs['x'].ndim > 1 and inputs['x'].shape[1] == 3: raise KeyError('three columns')
        self.calls.append(len(inputs['x'])); return {'y': inputs['x'] * 2}

def test_fallback_batch_fails_only_the_bad_request():
    "Requests of different trailing shapes run one by one: a failing one fails alone, and each call counts as a batch."
    from mlinfra_nb.serve.server import _run_batch, _Task
    sizes = []
    done = _run_batch(Twice(), 'serving_default', [_Task({'x': np.ones((1, n))}, 1) for n in (2, 3, 4)],
                      on_batch=lambda s, rows: sizes.append(rows))
    assert [None if e is None else type(e) for t, out, e in done] == [None, KeyError, None]
    assert [out['y'].shape for t, out, e in done if out is not None] == [(1, 2), (1, 4)]
    assert sizes == [1, 1]

def test_different_dtypes_are_not_concatenated():
    "float32 and float64 requests never share a call (concatenating would turn the float32 rows into float64)."
    from mlinfra_nb.serve.server import _run_batch, _Task
    d = Twice()
    done = _run_batch(d, 'serving_default', [_Task({'x': np.ones(1, np.float32)}, 1), _Task({'x': np.ones(1)}, 1)])
    assert d.calls == [1, 1] and [out['y'].dtype for t, out, e in done] == [np.float32, np.float64]

def test_closed_batcher_refuses_and_fails_leftovers():
    "submit on a closed batcher is refused with UNAVAILABLE at once; requests queued when it closed fail the same way."
    from mlinfra_nb.serve.server import Batcher
    from mlinfra_nb.serve.models import ServingError
    b = Batcher(batching_parameters(max_batch_size=4, batch_timeout_micros=10**7, num_batch_threads=1))
    with cf.ThreadPoolExecutor(1) as ex:
        waiting = ex.submit(b.submit, Twice(), 'serving_default', {'x': np.ones(1)})
        time.sleep(0.2); b.close()
        with pytest.raises(ServingError, match='batch scheduler is closed') as e: waiting.result(timeout=5)
        assert e.value.code == 'UNAVAILABLE'
        late = ex.submit(b.submit, Twice(), 'serving_default', {'x': np.ones(1)})
        with pytest.raises(ServingError, match='batch scheduler is closed'): late.result(timeout=5)

def test_emptied_queues_let_servables_go():
    "Once its requests have run, a queue is dropped: the servable (an unloaded version, say) is not kept alive by it."
    import gc, weakref
    from mlinfra_nb.serve.server import Batcher
    b = Batcher(batching_parameters(max_batch_size=4, batch_timeout_micros=1000, num_batch_threads=1))
    try:
        d = Twice(); ref = weakref.ref(d)
        assert b.submit(d, 'serving_default', {'x': np.ones(2)})['y'].tolist() == [2., 2.]
        assert b.queues == {}
        del d; gc.collect()
        assert ref() is None
    finally: b.close()

def test_cancelled_request_leaves_its_queue():
    "A coroutine cancelled while waiting for its batch takes its request out: it neither runs nor holds a queue place."
    import asyncio
    from mlinfra_nb.serve.server import Batcher
    b, d = Batcher(batching_parameters(max_batch_size=4, batch_timeout_micros=500_000, num_batch_threads=1)), Twice()
    async def go():
        w = asyncio.ensure_future(b.submit_async(d, 'serving_default', {'x': np.ones(1)}))
        await asyncio.sleep(0.05)
        assert b.queues[(id(d), 'serving_default')].rows == 1
        w.cancel()
        with pytest.raises(asyncio.CancelledError): await w
        assert b.queues == {}
        await asyncio.sleep(0.6)                     # past the batch timeout: nothing runs
    try:
        asyncio.run(go())
        assert d.calls == []
    finally: b.close()

def test_counted_statuses_besides_serving_errors(server):
    "A request ending in an exception other than a ServingError counts UNKNOWN; a cancelled one CANCELLED, not OK."
    import asyncio
    counts = server.serving.metrics['requests'].counts
    before = {s: counts[('half-test', s)] for s in ('OK', 'UNKNOWN', 'CANCELLED')}
    with pytest.raises(KeyError):
        with server.serving.counted('half-test', 'predict', 'GRPC'): raise KeyError('x')
    with pytest.raises(asyncio.CancelledError):
        with server.serving.counted('half-test', 'predict', 'GRPC'): raise asyncio.CancelledError()
    assert {s: counts[('half-test', s)] - n for s, n in before.items()} == {'OK': 0, 'UNKNOWN': 1, 'CANCELLED': 1}

def test_rest_deadline_counts_deadline_exceeded(lib, tmp_path):
    "A REST predict answered 504 by --rest_api_timeout_in_ms is counted DEADLINE_EXCEEDED once (not OK when its thread ends)."
    srv = start_server(tmp_path, server_config(model_config('slow', lib/'slow')), poll_seconds=0, rest_timeout=0.001)
    try:
        code, _, out = raw(srv, 'POST', '/v1/models/slow:predict', {'instances': [[1.0]]})
        assert code == 504 and json.loads(out) == {'error': 'Timed out waiting for notification'}
        deadline, got = time.monotonic() + 60, {}
        while not got and time.monotonic() < deadline:   # counted when the worker thread finishes the model call
            time.sleep(0.2); got = {k: v for k, v in request_counts(srv).items() if k[0] == 'slow'}
        time.sleep(0.5)                                  # and nothing more comes (an OK from that thread, say)
        got = {k: v for k, v in request_counts(srv).items() if k[0] == 'slow'}
        assert got == {('slow', '', 'DEADLINE_EXCEEDED'): 1}, got
    finally: srv.stop()

@pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning')   # the REST thread's own error
def test_rest_start_failure_stops_grpc(lib, tmp_path, monkeypatch):
    "When REST cannot start, start() stops the gRPC server it had started (no __exit__ runs after a failed __enter__)."
    srv = ModelServer(config=server_config(model_config('scale', lib/'scale')), rest_port=0, grpc_port=0, poll_seconds=0)
    def broken(self): raise OSError("REST cannot start")
    monkeypatch.setattr(ModelServer, '_run_rest', broken)
    with pytest.raises(RuntimeError, match='REST server did not start'): srv.start()
    assert not srv.loop.is_running() and not srv.started
    with grpc.insecure_channel(srv.grpc_target) as ch:
        with pytest.raises(grpc.FutureTimeoutError): grpc.channel_ready_future(ch).result(timeout=1)
