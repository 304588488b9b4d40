"""Classify, Regress and MultiInference on the local server, over gRPC and REST, as TensorFlow Serving answers them; and the
metadata, version and input-depth answers TF Serving prints.

The models take serialized `tf.Example`s, as TF Serving's classify and regress APIs need: a `tf.Module` saved with
`tf.saved_model.save` (the estimator-style layout: one `inputs` string tensor, `classes`/`scores` or `outputs`), and a Keras 3
model exported with an extra parsing signature (`keras.export.ExportArchive`). Both are made here, once per module.

TF Serving sources the behaviours come from: servables/tensorflow/classifier.cc and regressor.cc (signature checks, result
checks and their messages), util.cc (`InputToSerializedExampleTensor`: context bytes before each example, "Input is empty."),
multi_inference.cc (one model, distinct signatures, "Unsupported signature method_name"), util/json_tensor.cc (REST examples
and results), model_servers/http_rest_api_util.cc (metadata JSON with every field printed, "Failed to convert version").
"""
from __future__ import annotations
import json, re
from pathlib import Path

import numpy as np
import grpc, pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (classification_pb2, inference_pb2, input_pb2, prediction_log_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from mlinfra_nb.workspace import import_tensorflow
from mlinfra_nb.serve.config import model_config, server_config
from mlinfra_nb.serve.server import ModelServer
from test_serve_server import raw, tf_error, grpc_code

tf = import_tensorflow()
keras = tf.keras
SC = grpc.StatusCode
FEATURES = {'x': tf.io.FixedLenFeature([1], tf.float32), 'w': tf.io.FixedLenFeature([1], tf.float32, default_value=[1.0])}


# --- models ------------------------------------------------------------------------------------------------------------

class Scorer(tf.Module):
    "Estimator-style signatures over serialized examples with features x and w (w defaults to 1)."
    def _parse(self, inputs): f = tf.io.parse_example(inputs, FEATURES); return f['x'], f['w']

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def classify(self, inputs):   # p = sigmoid(x * w): scores [1 - p, p] for classes ['no', 'yes']
        x, w = self._parse(inputs)
        p = tf.sigmoid(x * w)
        return {'scores': tf.concat([1 - p, p], 1), 'classes': tf.tile(tf.constant([[b'no', b'yes']]), [tf.shape(x)[0], 1])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def scores_only(self, inputs): x, w = self._parse(inputs); return {'scores': x * w}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def regress(self, inputs): x, w = self._parse(inputs); return {'outputs': x * w * 0.5 + 2}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def wide(self, inputs): x, w = self._parse(inputs); return {'outputs': tf.concat([x, w], 1)}   # two values per example

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def doubles(self, inputs): x, w = self._parse(inputs); return {'outputs': tf.cast(x, tf.float64)}

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
    def predict(self, x): return {'y': x * 0.5 + 2}

def export_scorer(path:Path):
    m = Scorer()
    tf.saved_model.save(m, str(path), signatures={'classify': m.classify, 'scores_only': m.scores_only, 'regress': m.regress,
                                                  'wide': m.wide, 'doubles': m.doubles, 'serving_default': m.predict})

def export_keras_regressor(path:Path):
    "A Keras model on x, exported with its own signature and a parsing one (`regress`) that feeds it from examples."
    x = keras.Input((1,), name='x')
    model = keras.Model(x, keras.layers.Dense(1, kernel_initializer='ones', bias_initializer=keras.initializers.Constant(1.0))(x))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint('serving_default', model.call, input_signature=[tf.TensorSpec([None, 1], tf.float32, name='x')])
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='inputs')])
    def regress(inputs): return {'outputs': model(tf.io.parse_example(inputs, {'x': FEATURES['x']})['x'])}
    archive.add_endpoint('regress', regress)
    archive.write_out(str(path), verbose=False)


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp('inference_models')
    export_scorer(root/'scorer'/'1'); export_keras_regressor(root/'kreg'/'3')
    cfg = server_config(model_config('scorer', root/'scorer', log_requests=1.0, log_prefix=root/'logs'/'scorer'), model_config('kreg', root/'kreg'))
    srv = ModelServer(config=cfg, rest_port=0, grpc_port=0, poll_seconds=0).start()
    srv.log_dir, srv.root = root/'logs', root
    yield srv
    srv.stop()

@pytest.fixture(scope='module')
def stub(server):
    ch = grpc.insecure_channel(server.grpc_target)
    yield prediction_service_pb2_grpc.PredictionServiceStub(ch)
    ch.close()


# --- helpers -----------------------------------------------------------------------------------------------------------

def example(**features)->example_pb2.Example:
    ex = example_pb2.Example()
    for k, v in features.items(): ex.features.feature[k].float_list.value.extend(v if isinstance(v, list) else [v])
    return ex

def classify_req(model='scorer', signature='classify', examples=(), context=None):
    r = classification_pb2.ClassificationRequest()
    r.model_spec.name, r.model_spec.signature_name = model, signature
    _fill(r.input, examples, context)
    return r

def regress_req(model='scorer', signature='regress', examples=(), context=None):
    r = regression_pb2.RegressionRequest()
    r.model_spec.name, r.model_spec.signature_name = model, signature
    _fill(r.input, examples, context)
    return r

def _fill(inp:input_pb2.Input, examples, context):
    if context is None: inp.example_list.examples.extend(examples)
    else:
        inp.example_list_with_context.context.CopyFrom(context)
        inp.example_list_with_context.examples.extend(examples)

sigmoid = lambda v: 1 / (1 + np.exp(-v))


# --- Classify ----------------------------------------------------------------------------------------------------------

def test_classify_over_grpc(stub):
    "One list of classes per example, each with its label and score; the model spec names the version that answered."
    resp = stub.Classify(classify_req(examples=[example(x=0.0), example(x=2.0, w=3.0)]), timeout=30)
    got = [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]
    assert [[l for l, _ in row] for row in got] == [['no', 'yes'], ['no', 'yes']]
    np.testing.assert_allclose([[s for _, s in row] for row in got], [[0.5, 0.5], [1 - sigmoid(6.0), sigmoid(6.0)]], atol=1e-6)
    assert (resp.model_spec.name, resp.model_spec.signature_name, resp.model_spec.version.value) == ('scorer', 'classify', 1)

def test_classify_scores_only_has_empty_labels(stub):
    "A signature with only `scores` gives classes with an empty label, as TF Serving's REST answer `[['', 3.0]]` shows."
    resp = stub.Classify(classify_req(signature='scores_only', examples=[example(x=1.5, w=2.0)]), timeout=30)
    assert [(c.label, c.score) for c in resp.result.classifications[0].classes] == [('', 3.0)]

def test_context_features_are_shared_and_examples_win(stub):
    "With a context, each example is the context's bytes then its own: the context fills what an example lacks, an example's own value wins."
    resp = stub.Regress(regress_req(examples=[example(x=2.0), example(x=2.0, w=1.0)], context=example(w=4.0)), timeout=30)
    assert [r.value for r in resp.result.regressions] == [2.0 * 4.0 * 0.5 + 2, 2.0 * 1.0 * 0.5 + 2]

def test_classify_over_rest(server):
    "REST takes examples as JSON objects of features and answers `{\"results\": [[[label, score], ...]]}`."
    code, _, body = raw(server, 'POST', '/v1/models/scorer:classify', {'signature_name': 'scores_only', 'examples': [{'x': 1.5, 'w': 2.0}]})
    assert code == 200, body
    assert json.loads(body) == {'results': [[['', 3.0]]]}
    code, _, body = raw(server, 'POST', '/v1/models/scorer/versions/1:classify',
                        {'signature_name': 'classify', 'context': {'w': 1.0}, 'examples': [{'x': 0.0}]})
    assert json.loads(body) == {'results': [[['no', 0.5], ['yes', 0.5]]]}


# --- Regress -----------------------------------------------------------------------------------------------------------

def test_regress_over_grpc_and_rest(server, stub):
    resp = stub.Regress(regress_req(examples=[example(x=2.0), example(x=4.0)]), timeout=30)
    assert [r.value for r in resp.result.regressions] == [3.0, 4.0]
    assert (resp.model_spec.signature_name, resp.model_spec.version.value) == ('regress', 1)
    code, _, body = raw(server, 'POST', '/v1/models/scorer:regress', {'signature_name': 'regress', 'examples': [{'x': 2.0}, {'x': 4.0}]})
    assert (code, json.loads(body)) == (200, {'results': [3.0, 4.0]})

def test_keras_model_with_a_parsing_signature(server, stub):
    "A Keras 3 model exported with a signature that parses examples regresses like an estimator did: x + 1 here."
    resp = stub.Regress(regress_req('kreg', examples=[example(x=2.0), example(x=-1.0)]), timeout=30)
    assert [r.value for r in resp.result.regressions] == [3.0, 0.0]
    assert resp.model_spec.version.value == 3
    code, _, body = raw(server, 'POST', '/v1/models/kreg:regress', {'signature_name': 'regress', 'examples': [{'x': 5.0}]})
    assert json.loads(body) == {'results': [6.0]}


# --- MultiInference ----------------------------------------------------------------------------------------------------

def test_multi_inference_runs_every_task_on_the_same_examples(stub):
    r = inference_pb2.MultiInferenceRequest()
    for sig, method in (('regress', 'tensorflow/serving/regress'), ('classify', 'tensorflow/serving/classify')):
        t = r.tasks.add(); t.model_spec.name, t.model_spec.signature_name, t.method_name = 'scorer', sig, method
    r.input.example_list.examples.extend([example(x=2.0), example(x=0.0)])
    resp = stub.MultiInference(r, timeout=30)
    assert [x.value for x in resp.results[0].regression_result.regressions] == [3.0, 2.0]
    assert [c.label for c in resp.results[1].classification_result.classifications[1].classes] == ['no', 'yes']
    assert resp.results[1].classification_result.classifications[1].classes[1].score == 0.5
    assert [(x.model_spec.signature_name, x.model_spec.version.value) for x in resp.results] == [('regress', 1), ('classify', 1)]

def multi(*tasks, examples=(example(x=1.0),)):
    r = inference_pb2.MultiInferenceRequest()
    for model, sig, method in tasks:
        t = r.tasks.add(); t.model_spec.name, t.model_spec.signature_name, t.method_name = model, sig, method
    r.input.example_list.examples.extend(examples)
    return r

REG, CLS = 'tensorflow/serving/regress', 'tensorflow/serving/classify'
MULTI_ERRORS = [
    ('two-models', multi(('scorer', 'regress', REG), ('kreg', 'regress', REG)), SC.INVALID_ARGUMENT, 'must access the same model name'),
    ('same-signature-twice', multi(('scorer', 'regress', REG), ('scorer', 'regress', REG)), SC.INVALID_ARGUMENT, 'Duplicate evaluation of signature: regress'),
    ('unknown-signature', multi(('scorer', 'nope', REG)), SC.INVALID_ARGUMENT, 'Requested signature not found in model graph: nope'),
    ('predict-method', multi(('scorer', 'serving_default', 'tensorflow/serving/predict')), SC.UNIMPLEMENTED, 'Unsupported signature method_name: tensorflow/serving/predict'),
    ('no-examples', multi(('scorer', 'regress', REG), examples=()), SC.INVALID_ARGUMENT, r'^Input is empty\.$'),
    ('no-tasks', inference_pb2.MultiInferenceRequest(), SC.INVALID_ARGUMENT, 'ModelSpec has no name specified'),
]

@pytest.mark.parametrize('name,request_,code,pattern', MULTI_ERRORS, ids=[c[0] for c in MULTI_ERRORS])
def test_multi_inference_refusals(stub, name, request_, code, pattern):
    got, details = grpc_code(stub.MultiInference, request_)
    assert got == code and re.search(pattern, details), (got, details)


# --- what a classify or regress signature must be, and what its outputs must be ------------------------------------------

GRPC_ERRORS = [
    ('classify-unknown-signature', 'Classify', lambda: classify_req(signature='nope', examples=[example(x=1.0)]), SC.INVALID_ARGUMENT,
     'No signature was found with the name: nope'),
    ('classify-a-predict-signature', 'Classify', lambda: classify_req(signature='serving_default', examples=[example(x=1.0)]),
     SC.INVALID_ARGUMENT, 'No classification inputs found in SignatureDef'),
    ('classify-a-regression', 'Classify', lambda: classify_req(signature='regress', examples=[example(x=1.0)]), SC.INVALID_ARGUMENT,
     'outputs to contain at least one of "classes" or "scores"'),
    ('regress-a-classification', 'Regress', lambda: regress_req(signature='classify', examples=[example(x=1.0)]), SC.INVALID_ARGUMENT,
     'Expected one output Tensor.'),
    ('regress-two-values-per-example', 'Regress', lambda: regress_req(signature='wide', examples=[example(x=1.0)]), SC.INVALID_ARGUMENT,
     r'Expected output Tensor shape to be either \[batch_size\] or \[batch_size, 1\] but got \[1,2\]'),
    ('regress-doubles', 'Regress', lambda: regress_req(signature='doubles', examples=[example(x=1.0)]), SC.INVALID_ARGUMENT,
     'Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE'),
    ('regress-no-examples', 'Regress', lambda: regress_req(), SC.INVALID_ARGUMENT, r'^Input is empty\.$'),
    ('regress-missing-feature', 'Regress', lambda: regress_req(examples=[example(w=1.0)]), SC.INVALID_ARGUMENT, 'x'),   # the model's own error
    ('regress-no-model-spec', 'Regress', lambda: regression_pb2.RegressionRequest(), SC.INVALID_ARGUMENT, 'Missing ModelSpec'),
    ('classify-unknown-model', 'Classify', lambda: classify_req('nope', examples=[example(x=1.0)]), SC.NOT_FOUND, r'Latest\(nope\)'),
]

@pytest.mark.parametrize('name,method,make,code,pattern', GRPC_ERRORS, ids=[c[0] for c in GRPC_ERRORS])
def test_inference_refusals(stub, name, method, make, code, pattern):
    got, details = grpc_code(getattr(stub, method), make())
    assert got == code and re.search(pattern, details), (got, details)

REST_ERRORS = [
    ('no-examples-key', '/v1/models/scorer:regress', {'instances': [1.0]}, "When method is classify, key 'examples' is expected and was not found"),
    ('examples-not-a-list', '/v1/models/scorer:regress', {'examples': {'x': 1.0}}, "Expecting 'examples' value to be an list/array"),
    ('empty-examples', '/v1/models/scorer:classify', {'examples': []}, "'examples' value is an empty array"),
    ('example-not-an-object', '/v1/models/scorer:classify', {'examples': [1.0]}, 'Example must be JSON object but got JSON Number'),
    ('mixed-kinds', '/v1/models/scorer:regress', {'examples': [{'x': [1.5, 2]}]}, 'Unexpected element type in feature: x expecting type: float'),
    ('null-feature', '/v1/models/scorer:regress', {'examples': [{'x': None}]}, 'Feature: x has element with unexpected JSON type: Null'),
    ('nested-feature', '/v1/models/scorer:regress', {'examples': [{'x': [[1.0]]}]}, 'Feature: x has element with unexpected JSON type: Array'),
    ('uint64-feature', '/v1/models/scorer:regress', {'examples': [{'x': 2**63}]}, 'has uint64_t element. Only int64_t is supported.'),
    ('signature-not-a-string', '/v1/models/scorer:regress', {'signature_name': 3, 'examples': [{'x': 1.0}]}, "'signature_name' key must be a string value"),
]

@pytest.mark.parametrize('name,url,body,pattern', REST_ERRORS, ids=[c[0] for c in REST_ERRORS])
def test_rest_inference_refusals(server, name, url, body, pattern):
    tf_error(raw(server, 'POST', url, body), 400, re.escape(pattern))


# --- request logs ------------------------------------------------------------------------------------------------------

def test_classify_and_regress_are_logged(server, stub):
    "A model whose logging config samples every request logs classify and regress requests too, as ClassifyLog and RegressLog records."
    stub.Classify(classify_req(examples=[example(x=1.0)]), timeout=30)
    stub.Regress(regress_req(examples=[example(x=1.0)]), timeout=30)
    server.serving.logger.close()
    kinds = set()
    for f in server.log_dir.glob('scorer-*.tfrecord'):
        for rec in tf.data.TFRecordDataset(str(f)):
            log = prediction_log_pb2.PredictionLog.FromString(rec.numpy())
            kinds.add((log.WhichOneof('log_type'), log.log_metadata.model_spec.signature_name))
    assert {('classify_log', 'classify'), ('regress_log', 'regress')} <= kinds, kinds


# --- metadata, versions in URLs, deep inputs -----------------------------------------------------------------------------

def test_rest_metadata_prints_default_valued_fields(server):
    "TF Serving prints every field of the metadata, default-valued or not: an unknown-rank input has `dim: []` and `unknown_rank: true`."
    doc = json.loads(raw(server, 'GET', '/v1/models/scorer/metadata')[2])
    assert doc['model_spec'] == {'name': 'scorer', 'signature_name': '', 'version': '1'}
    sig = doc['metadata']['signature_def']['signature_def']['classify']
    assert set(sig) == {'inputs', 'outputs', 'method_name', 'defaults'}
    shape = sig['inputs']['inputs']['tensor_shape']
    assert shape == {'dim': [{'size': '-1', 'name': ''}], 'unknown_rank': False}, shape

def test_huge_version_number_is_a_bad_request(server):
    "A version past int64 in the URL is TF Serving's 'Failed to convert version', however many digits it has."
    for digits in ('9' * 20, '1' * 5000):
        tf_error(raw(server, 'POST', f'/v1/models/scorer/versions/{digits}:predict', {'instances': [[1.0]]}), 400, 'Failed to convert version')
        tf_error(raw(server, 'GET', f'/v1/models/scorer/versions/{digits}'), 400, 'Failed to convert version')

@pytest.mark.parametrize('depth', [65, 200, 1024, 5000])
def test_deep_inputs_are_bad_requests(server, depth):
    "Inputs nested deeper than a tensor can be (64 axes here) are a 400 with a message, at any depth."
    for key in (b'instances', b'inputs'):
        body = b'{"' + key + b'": ' + b'[' * depth + b'1.0' + b']' * depth + b'}'
        tf_error(raw(server, 'POST', '/v1/models/scorer:predict', body), 400)


def test_predict_inputs_named_wrong_get_tf_servings_message(stub):
    "Inputs that are not the signature's are refused with predict_util.cc's message, listing what was extra and what was missing."
    from tensorflow_serving.apis import predict_pb2
    r = predict_pb2.PredictRequest()
    r.model_spec.name = 'scorer'
    r.inputs['z'].CopyFrom(tf.make_tensor_proto(np.ones((1, 1), np.float32)))
    got, details = grpc_code(stub.Predict, r)
    assert got == SC.INVALID_ARGUMENT
    assert details == "input size does not match signature: 1!=1 len({z}) != len({x}). Sent extra: {z}. Missing but required: {x}.", details


def test_method_name_check_when_asked(server):
    """With TF Serving's --enable_signature_method_name_check, a signature must say what it does: the TF2 signatures here all
    say `predict`, so classify and regress are refused with classifier.cc's message, and predict still runs."""
    from tensorflow_serving.apis import predict_pb2
    with ModelServer(config=server_config(model_config('scorer', server.root/'scorer')), rest_port=None, grpc_port=0, poll_seconds=0,
                     method_check=True) as srv, grpc.insecure_channel(srv.grpc_target) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        got, details = grpc_code(stub.Classify, classify_req(examples=[example(x=1.0)]))
        assert (got, details) == (SC.INVALID_ARGUMENT, 'Expected classification signature method_name to be tensorflow/serving/classify. '
                                                       'Was: tensorflow/serving/predict')
        got, details = grpc_code(stub.Regress, regress_req(examples=[example(x=1.0)]))
        assert got == SC.INVALID_ARGUMENT and 'Expected regression signature method_name' in details
        r = predict_pb2.PredictRequest(); r.model_spec.name = 'scorer'
        r.inputs['x'].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
        assert tf.make_ndarray(stub.Predict(r, timeout=30).outputs['y']).tolist() == [[3.0]]
