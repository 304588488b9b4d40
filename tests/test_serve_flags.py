"""`mlinfra serve` started the way TensorFlow Serving's own tests start `tensorflow_model_server`.

TF Serving's flags come from model_servers/main.cc (48 of them, with their types and defaults), their meaning from
model_servers/server.cc (0 turns a port off, at least one of --port and --grpc_socket_path, the channel arguments split on
',' and '=' with integers passed as integers, the config file read once unless a poll interval is given) and
http_server.cc / http_rest_api_util.cc (the three CORS headers, the preflight answer, DEADLINE_EXCEEDED as 504).
TF Serving's test harness (tensorflow_model_server_test_base.py, `RunServer`) passes
`--port --rest_api_port --rest_api_timeout_in_ms=5000 --grpc_socket_path --model_name --model_base_path
--prefer_tflite_model=true --monitoring_config_file --model_config_file_poll_wait_seconds --enable_batching
--batching_parameters_file --grpc_channel_arguments`; one server here gets exactly that set.

Servers run as subprocesses (`python -m mlinfra_nb.cli serve ...`) on 127.0.0.1, started together once per module and
stopped by pid with SIGTERM; one more runs in-process for the body-size, raw-bytes and thread-count cases. The models are
tiny Keras models exported by the `models` fixture.
"""
from __future__ import annotations
import contextlib, http.client, io, json, os, select, shutil, signal, socket, subprocess, sys, threading, time
import concurrent.futures as cf
from pathlib import Path

import numpy as np
import grpc, httpx, psutil, pytest
from tensorflow_serving.apis import (get_model_status_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from mlinfra_nb.cli import IGNORED_FLAGS, SERVE_FLAGS, build_parser, main
from mlinfra_nb.serve.config import (batching_parameters, model_config, monitoring_config, server_config, write_text_proto)
from mlinfra_nb.serve.server import ModelServer
from mlinfra_nb.workspace import InvalidInput, import_tensorflow

ROOT = Path(__file__).resolve().parent.parent
tf = import_tensorflow()
keras = tf.keras

# Every flag of tensorflow_model_server (model_servers/main.cc), with a value of its type to pass.
TF_FLAGS = {
    'port': '8500', 'grpc_socket_path': '/tmp/tf-serving.sock', 'rest_api_port': '8501', 'rest_api_num_threads': '4',
    'rest_api_timeout_in_ms': '5000', 'rest_api_enable_cors_support': bool, 'enable_batching': bool,
    'allow_version_labels_for_unavailable_models': bool, 'batching_parameters_file': '/tmp/batching.config',
    'enable_per_model_batching_parameters': bool, 'model_config_file': '/tmp/models.config',
    'model_config_file_poll_wait_seconds': '60', 'model_name': 'half', 'model_base_path': '/tmp/models/half',
    'num_load_threads': '2', 'num_unload_threads': '2', 'max_num_load_retries': '3', 'load_retry_interval_micros': '1000',
    'file_system_poll_wait_seconds': '5', 'flush_filesystem_caches': bool, 'tensorflow_session_parallelism': '2',
    'tensorflow_session_config_file': '/tmp/session.config', 'tensorflow_intra_op_parallelism': '2',
    'tensorflow_inter_op_parallelism': '2', 'use_alts_credentials': bool, 'ssl_config_file': '/tmp/ssl.config',
    'platform_config_file': '/tmp/platform.config', 'per_process_gpu_memory_fraction': '0.5', 'saved_model_tags': 'serve,gpu',
    'grpc_channel_arguments': 'grpc.max_connection_age_ms=2000', 'grpc_max_threads': '16', 'enable_model_warmup': bool,
    'num_request_iterations_for_warmup': '3', 'version': bool, 'monitoring_config_file': '/tmp/monitoring.config',
    'remove_unused_fields_from_bundle_metagraph': bool, 'prefer_tflite_model': bool, 'num_tflite_pools': '2',
    'num_tflite_interpreters_per_pool': '2', 'enable_signature_method_name_check': bool, 'xla_cpu_compilation_enabled': bool,
    'xla_gpu_compilation_enabled': bool, 'enable_profiler': bool, 'thread_pool_factory_config_file': '/tmp/pool.config',
    'mixed_precision': 'bfloat16', 'skip_initialize_tpu': bool, 'enable_grpc_healthcheck_service': bool,
    'enable_serialization_as_tensor_content': bool,
}
CHANNEL_ARGS = 'grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb,grpc.so_reuseaddr=1'   # TF Serving's test suite's
DEADLINE = "Timed out waiting for notification"   # TensorFlow's DEADLINE_EXCEEDED for a run past its RunOptions timeout
CORS = {'access-control-allow-origin': '*', 'access-control-allow-methods': 'POST, GET', 'access-control-allow-headers': 'Content-Type'}


# --- models ------------------------------------------------------------------------------------------------------------

def export_half(path:Path, offset:float=2.0):
    "x: float32 [n] -> 0.5 * x + offset (TF Serving's half_plus_two, in our own Keras)."
    x = keras.Input((), name='x')
    keras.Model({'x': x}, keras.layers.Lambda(lambda t: t * 0.5 + offset)(x)).export(str(path), verbose=False)

def export_spin(path:Path):
    "x: float32 [n, 1] -> x, after spinning for max(x) seconds of wall time: a model exactly as slow as a request asks."
    x = keras.Input((1,), name='x')
    def fn(t):
        start, secs = tf.timestamp(), tf.cast(tf.reduce_max(t), tf.float64)
        n = tf.while_loop(lambda i: tf.timestamp() - start < secs, lambda i: i + 1, [tf.constant(0)])[0]
        return t + 0.0 * tf.cast(n, tf.float32)
    keras.Model(x, keras.layers.Lambda(fn, output_shape=lambda s: s)(x)).export(str(path), verbose=False)

@pytest.fixture(scope='module')
def models(tmp_path_factory):
    "half (version 1, 2.0 added; a version 2 adding 3.0 kept aside in `half_v2`) and spin (version 1)."
    root = tmp_path_factory.mktemp('flag_models')
    export_half(root/'half'/'1'); export_half(root/'half_v2', 3.0); export_spin(root/'spin'/'1')
    return root


# --- helpers -----------------------------------------------------------------------------------------------------------

def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def cli(*argv)->tuple[int, str, str]:
    "`mlinfra ARGV` in this process: (exit status, stdout, stderr); argparse's exits count as statuses."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main(list(argv))
        except SystemExit as e: rc = e.code
    return rc, out.getvalue(), err.getvalue()

def one_line_error(rc:int, err:str, code:int, text:str):
    "A refusal: status `code`, and one line on stderr holding `text`, no usage text."
    assert rc == code, (rc, err)
    assert err.count('\n') == 1 and 'usage:' not in err and text in err, err

def stale_socket(path:Path):
    "A socket file with nobody listening, as a server killed with SIGKILL leaves it."
    s = socket.socket(socket.AF_UNIX); s.bind(str(path)); s.close()
    assert path.exists()

class Served:
    "`python -m mlinfra_nb.cli serve FLAGS` as a subprocess: stdout and stderr in files, ready once it prints where it serves."
    def __init__(self, folder:Path, *flags:str):
        folder.mkdir(parents=True, exist_ok=True)
        self.out, self.err = folder/'stdout', folder/'stderr'
        env = {**{k: v for k, v in os.environ.items() if not k.startswith('MLINFRA_')}, 'PYTHONPATH': str(ROOT),
               'MLINFRA_HOME': str(folder/'home'), 'TF_CPP_MIN_LOG_LEVEL': '2'}
        with open(self.out, 'w') as out, open(self.err, 'w') as err:
            self.proc = subprocess.Popen([sys.executable, '-m', 'mlinfra_nb.cli', 'serve', *flags], stdout=out, stderr=err, env=env, cwd=folder)

    def ready(self, timeout:float=180)->Served:
        deadline = time.monotonic() + timeout
        while 'serving ' not in self.out.read_text():
            if self.proc.poll() is not None: raise AssertionError(f"the server exited ({self.proc.returncode}): {self.err.read_text()[-3000:]}")
            if time.monotonic() > deadline: raise AssertionError(f"the server did not start: {self.err.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    @property
    def said(self)->str: return self.out.read_text()
    @property
    def warnings(self)->list[str]: return [l for l in self.err.read_text().splitlines() if l.startswith('mlinfra serve: ignoring')]
    def listening(self)->set[int]:
        "The TCP ports the process listens on."
        return {c.laddr.port for c in psutil.Process(self.proc.pid).net_connections(kind='tcp') if c.status == psutil.CONN_LISTEN}

    def stop(self)->int:
        if self.proc.poll() is None: self.proc.send_signal(signal.SIGTERM)
        try: return self.proc.wait(30)
        except subprocess.TimeoutExpired: self.proc.kill(); return self.proc.wait(10)

def predict_grpc(target:str, name:str, x:list[float])->np.ndarray:
    req = predict_pb2.PredictRequest(); req.model_spec.name = name
    req.inputs['x'].CopyFrom(tf.make_tensor_proto(np.array(x, np.float32)))
    with grpc.insecure_channel(target) as ch:
        resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, timeout=30)
    return tf.make_ndarray(resp.outputs['output_0'])

def status_grpc(target:str, name:str)->list[tuple[int, str]]:
    with grpc.insecure_channel(target) as ch:
        st = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={'name': name}), timeout=30)
    return [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state)) for s in st.model_version_status]


# --- the servers (started together: each pays TensorFlow's import once, side by side) ----------------------------------

@pytest.fixture(scope='module')
def launched(models, tmp_path_factory):
    base = tmp_path_factory.mktemp('served')
    conf = base/'conf'; conf.mkdir()
    write_text_proto(batching_parameters(max_batch_size=8, batch_timeout_micros=1000), conf/'batching.config')
    write_text_proto(monitoring_config(), conf/'monitoring.config')
    tfs = dict(port=free_port(), rest=free_port(), sock=base/'tf-serving.sock')
    servers = {'tfs': (Served(base/'tfs', f"--port={tfs['port']}", f"--rest_api_port={tfs['rest']}", '--rest_api_timeout_in_ms=5000',
                              f"--grpc_socket_path={tfs['sock']}", '--model_name=default', f"--model_base_path={models/'half'}",
                              '--prefer_tflite_model=true', f"--monitoring_config_file={conf/'monitoring.config'}",
                              '--model_config_file_poll_wait_seconds=0', '--enable_batching',
                              f"--batching_parameters_file={conf/'batching.config'}", f'--grpc_channel_arguments={CHANNEL_ARGS}'), tfs)}
    models_dir = base/'models'; shutil.copytree(models/'half', models_dir/'half')   # a folder the test adds versions to
    cfg = dict(rest=free_port(), sock=base/'cfg.sock', config=conf/'models.config', half=models_dir/'half')
    write_text_proto(server_config(model_config('half', models_dir/'half'), model_config('spin', models/'spin')), cfg['config'])
    stale_socket(cfg['sock'])
    servers['cfg'] = (Served(base/'cfg', f"--model_config_file={cfg['config']}", '--model_config_file_poll_wait_seconds=0',
                             '--file_system_poll_wait_seconds=0.2', '--port=0', f"--grpc_socket_path={cfg['sock']}",
                             f"--rest_api_port={cfg['rest']}", '--rest_api_enable_cors_support', '--rest_api_timeout_in_ms=500',
                             '--num_load_threads=4', '--ssl_config_file=/etc/ssl.config', '--saved_model_tags=serve',
                             '--enable_profiler=true', '--prefer_tflite_model=false', '--enable_model_warmup=false'), cfg)
    norest = dict(port=free_port())
    servers['norest'] = (Served(base/'norest', '--rest_api_port=0', f"--port={norest['port']}", '--model_name=half',
                                f"--model_base_path={models/'half'}"), norest)
    yield servers
    for srv, _ in servers.values(): srv.stop()

@pytest.fixture(scope='module')
def tfs(launched):
    srv, where = launched['tfs']
    return srv.ready(), where

@pytest.fixture(scope='module')
def cfg_server(launched):
    srv, where = launched['cfg']
    return srv.ready(), where

@pytest.fixture(scope='module')
def norest(launched):
    srv, where = launched['norest']
    return srv.ready(), where

@pytest.fixture(scope='module')
def inproc(models):
    "In this process: half and spin, no batching, a 1 MiB body limit, two REST and two gRPC threads."
    cfg = server_config(model_config('half', models/'half'), model_config('spin', models/'spin'))
    with ModelServer(config=cfg, rest_port=0, grpc_port=0, poll_seconds=0, max_body=1 << 20, rest_threads=2, grpc_threads=2) as srv:
        yield srv


# --- the parser --------------------------------------------------------------------------------------------------------

def test_the_flag_list_is_tf_servings():
    assert len(TF_FLAGS) == 48
    assert set(SERVE_FLAGS) | set(IGNORED_FLAGS) == set(TF_FLAGS) and not set(SERVE_FLAGS) & set(IGNORED_FLAGS)

@pytest.mark.parametrize('name', sorted(TF_FLAGS))
def test_every_flag_is_accepted_in_tf_servings_forms(name):
    p, sample = build_parser(), TF_FLAGS[name]
    if sample is bool:
        for argv, want in ([f'--{name}'], True), ([f'--{name}=true'], True), ([f'--{name}=false'], False), \
                          ([f'--{name}=1'], True), ([f'--{name}=0'], False), ([f'--{name}', 'false'], False), ([f'--{name}=FALSE'], False):
            assert getattr(p.parse_args(['serve', *argv]), name) is want, argv
        return
    a, b = p.parse_args(['serve', f'--{name}={sample}']), p.parse_args(['serve', f'--{name}', sample])
    assert getattr(a, name) == getattr(b, name) == type(getattr(a, name))(sample)

def test_an_unknown_flag_fails_in_one_line():
    for argv, named in [(['--no_such_flag=1'], '--no_such_flag=1'), (['--enable_batchin'], '--enable_batchin'),
                        (['--port=8500', '--grpc_socket'], '--grpc_socket')]:   # no abbreviations: TF Serving has none
        rc, out, err = cli('serve', *argv)
        one_line_error(rc, err, 2, f"unrecognized arguments: {named}")

def test_bad_values_fail_in_one_line():
    for argv, text in [(['--port=99313'], "argument --port: must be a port number from 0 to 65535, got 99313"),
                       (['--rest_api_port', '70000'], "argument --rest_api_port: must be a port number from 0 to 65535, got 70000"),
                       (['--port=-1'], "argument --port: must be a port number from 0 to 65535, got -1"),
                       (['--port=grpc'], "argument --port: 'grpc' is not a port number"),
                       (['--enable_batching=yes'], "argument --enable_batching: 'yes' is not true or false"),
                       (['--grpc_max_threads=0'], "argument --grpc_max_threads: must be at least 1, got 0")]:
        rc, out, err = cli('serve', *argv)
        one_line_error(rc, err, 2, text)
    with pytest.raises(InvalidInput, match="grpc_port must be a port number from 0 to 65535, not 99313"):
        ModelServer(grpc_port=99313)

def test_version_prints_one_line():
    rc, out, err = cli('serve', '--version')
    assert (rc, out.count('\n')) == (0, 1) and out.startswith('mlinfra serve ') and 'TensorFlow ' in out, out


# --- refusals before anything loads --------------------------------------------------------------------------------------

def test_ports_in_use_are_one_line(models):
    with socket.socket() as held:
        held.bind(('127.0.0.1', 0)); held.listen(); port = held.getsockname()[1]
        base = ['serve', f"--model_base_path={models/'half'}"]
        rc, out, err = cli(*base, f'--port={port}', f'--rest_api_port={free_port()}')
        one_line_error(rc, err, 1, f"cannot listen for gRPC on 127.0.0.1:{port}: port {port} is in use")
        rc, out, err = cli(*base, f'--port={free_port()}', f'--rest_api_port={port}')
        one_line_error(rc, err, 1, f"cannot listen for REST on 127.0.0.1:{port}: port {port} is in use")
    rc, out, err = cli(*base, '--port=8600', '--rest_api_port=8600')
    one_line_error(rc, err, 1, "REST and gRPC cannot share port 8600")

def test_grpc_needs_a_port_or_a_socket(models):
    rc, out, err = cli('serve', f"--model_base_path={models/'half'}", '--port=0')
    one_line_error(rc, err, 1, "at least one of --port and --grpc_socket_path must be set")

def test_socket_paths_that_cannot_be_bound_are_one_line(models, tmp_path):
    (tmp_path/'file').write_text('a regular file')
    for path, text in [(tmp_path/'no'/'such'/'dir.sock', f"no folder {tmp_path/'no'/'such'}"),
                       (tmp_path/'file', f"{tmp_path/'file'} exists and is not a socket"),
                       (tmp_path/("x" * 120), "the path is longer than a Unix socket allows (107 bytes)")]:
        rc, out, err = cli('serve', f"--model_base_path={models/'half'}", f'--grpc_socket_path={path}', f'--port={free_port()}',
                           f'--rest_api_port={free_port()}')
        one_line_error(rc, err, 1, f"cannot listen for gRPC on unix:{path}: {text}")
    assert (tmp_path/'file').read_text() == 'a regular file'   # never replaced

def test_malformed_channel_arguments_are_one_line(models):
    rc, out, err = cli('serve', f"--model_base_path={models/'half'}", '--grpc_channel_arguments=grpc.so_reuseaddr=1,grpc.max_connection_age_ms')
    one_line_error(rc, err, 1, "--grpc_channel_arguments: 'grpc.max_connection_age_ms' is not key=value")

def test_all_three_parallelism_flags_are_refused(models):
    rc, out, err = cli('serve', f"--model_base_path={models/'half'}", '--tensorflow_session_parallelism=2',
                       '--tensorflow_intra_op_parallelism=2', '--tensorflow_inter_op_parallelism=2')
    one_line_error(rc, err, 1, "not all three")

def test_parallelism_flags_size_tensorflows_thread_pools():
    code = ("from mlinfra_nb.cli import build_parser, _tensorflow_threads; import tensorflow as tf\n"
            "_tensorflow_threads(build_parser().parse_args(['serve', '--tensorflow_intra_op_parallelism=3', '--tensorflow_inter_op_parallelism=2']))\n"
            "print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())\n"
            "_tensorflow_threads(build_parser().parse_args(['serve']))   # all 0: left to TensorFlow, nothing set (nor refused)\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'PYTHONPATH': str(ROOT), 'TF_CPP_MIN_LOG_LEVEL': '2'})
    assert r.returncode == 0 and r.stdout.split() == ['3', '2'], (r.stdout, r.stderr[-2000:])

def test_a_models_config_that_does_not_parse_stops_the_server(tmp_path):
    "TF Serving's testBadModelConfig: the server exits, and stderr holds protobuf's text-format error."
    (tmp_path/'bad.config').write_text('model_config_list {\n  config { name: "half" base_pth: "/m" }\n}\n')
    r = subprocess.run([sys.executable, '-m', 'mlinfra_nb.cli', 'serve', f'--port={free_port()}', f'--rest_api_port={free_port()}',
                        f"--model_config_file={tmp_path/'bad.config'}", f'--grpc_channel_arguments={CHANNEL_ARGS}'],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, 'PYTHONPATH': str(ROOT), 'TF_CPP_MIN_LOG_LEVEL': '2', 'MLINFRA_HOME': str(tmp_path/'home')})
    assert r.returncode != 0
    errors = [l for l in r.stderr.splitlines() if l.startswith('mlinfra: error: ')]
    assert errors == ['mlinfra: error: Error parsing text-format tensorflow.serving.ModelServerConfig: 2:25: Message type '
                      f'"tensorflow.serving.ModelConfig" has no field named "base_pth". (in {tmp_path/"bad.config"})'], r.stderr[-2000:]


def test_manager_flags_reach_the_model_manager(models, tmp_path):
    "The manager's flags become ModelManager's arguments with TF Serving's units; the server is built, never started, and stopped."
    from mlinfra_nb.cli import _server_options
    args = build_parser().parse_args(['serve', f"--model_base_path={models/'half'}", '--port=0', f"--grpc_socket_path={tmp_path/'s.sock'}",
                                      f'--rest_api_port={free_port()}', '--max_num_load_retries=2', '--load_retry_interval_micros=250000',
                                      '--allow_version_labels_for_unavailable_models', '--enable_model_warmup=false',
                                      '--num_request_iterations_for_warmup=3', '--file_system_poll_wait_seconds=7',
                                      '--model_config_file_poll_wait_seconds=0'])
    srv = ModelServer(**_server_options(args))
    try:
        m = srv.serving.manager
        assert (m.load_retries, m.retry_interval, m.allow_unavailable_labels, m.warmup, m.warmup_iterations, m.poll_seconds,
                m.config_poll_seconds) == (2, 0.25, True, False, 3, 7.0, 0.0)
        assert (tmp_path/'s.sock').exists()
    finally: srv.stop()
    assert not (tmp_path/'s.sock').exists()   # gone even though it never served


# --- TF Serving's RunServer flags ----------------------------------------------------------------------------------------

def test_runserver_flags_serve_grpc_socket_and_rest(tfs):
    srv, where = tfs
    assert f"serving REST on http://127.0.0.1:{where['rest']}, gRPC on 127.0.0.1:{where['port']} and unix:{where['sock']}" in srv.said
    np.testing.assert_allclose(predict_grpc(f"127.0.0.1:{where['port']}", 'default', [1.0, 2.0]), [2.5, 3.0])
    np.testing.assert_allclose(predict_grpc(f"unix:{where['sock']}", 'default', [4.0]), [4.0])
    r = httpx.post(f"http://127.0.0.1:{where['rest']}/v1/models/default:predict", json={'instances': [1.0, 5.0]}, timeout=30)
    assert (r.status_code, r.json()) == (200, {'predictions': [2.5, 4.5]})
    metrics = httpx.get(f"http://127.0.0.1:{where['rest']}/monitoring/prometheus/metrics", timeout=30).text
    assert ':tensorflow:serving:request_count{model_name="default",status="OK"}' in metrics
    assert ':tensorflow:serving:batching_session:batch_size_count{model_name="default"}' in metrics   # batching is on
    assert srv.warnings == ["mlinfra serve: ignoring --prefer_tflite_model=true: this server serves saved_model.pb, never model.tflite"]

def test_channel_arguments_reach_the_grpc_server(tfs):
    "grpc.max_connection_age_ms=2000: the server sends GOAWAY after about 2 s, and the client's channel goes idle."
    srv, where = tfs
    states, seen_idle = [], threading.Event()
    def watch(state):
        states.append(state)
        if state == grpc.ChannelConnectivity.IDLE and grpc.ChannelConnectivity.READY in states: seen_idle.set()
    with grpc.insecure_channel(f"127.0.0.1:{where['port']}") as ch:
        ch.subscribe(watch, try_to_connect=True)
        grpc.channel_ready_future(ch).result(timeout=30)
        assert seen_idle.wait(10), states
        ch.unsubscribe(watch)
    np.testing.assert_allclose(predict_grpc(f"127.0.0.1:{where['port']}", 'default', [0.0]), [2.0])   # a new connection serves


# --- a config file, gRPC on a socket only, CORS, a deadline, ignored flags -------------------------------------------------

def test_stale_socket_is_replaced_and_grpc_tcp_is_off(cfg_server):
    srv, where = cfg_server
    assert f"serving REST on http://127.0.0.1:{where['rest']}, gRPC on unix:{where['sock']} (Ctrl-C stops)" in srv.said
    np.testing.assert_allclose(predict_grpc(f"unix:{where['sock']}", 'half', [2.0]), [3.0])
    assert srv.listening() == {where['rest']}   # --port=0: no gRPC over TCP

def test_cors_headers_and_preflight(cfg_server):
    srv, where = cfg_server
    url = f"http://127.0.0.1:{where['rest']}"
    for r in (httpx.post(f'{url}/v1/models/half:predict', json={'instances': [1.0]}, timeout=30),
              httpx.get(f'{url}/v1/models/half', timeout=30), httpx.get(f'{url}/v1/models/nope', timeout=30)):
        assert {k: r.headers.get(k) for k in CORS} == CORS, (r.status_code, r.headers)
    assert httpx.get(f'{url}/v1/models/nope', timeout=30).status_code == 404
    pre = httpx.options(f'{url}/v1/models/half:predict', headers={'Origin': 'https://app.example.com',
                                                                  'Access-Control-Request-Method': 'POST'}, timeout=30)
    assert (pre.status_code, pre.headers['access-control-allow-origin']) == (200, '*')
    assert httpx.options(f'{url}/v1/models/half:predict', timeout=30).status_code == 400   # no Origin
    assert 'access-control-allow-origin' not in httpx.get(f'{url}/not-the-api', timeout=30).headers

def test_rest_timeout_answers_a_slow_request_with_tf_servings_deadline_error(cfg_server):
    srv, where = cfg_server
    url = f"http://127.0.0.1:{where['rest']}/v1/models/spin:predict"
    t0 = time.monotonic()
    r = httpx.post(url, json={'instances': [[3.0]]}, timeout=30)   # spins 3 s; the limit is 500 ms
    took = time.monotonic() - t0
    assert (r.status_code, r.json()) == (504, {'error': DEADLINE}) and took < 2.0, (r.status_code, r.text, took)
    assert httpx.post(url, json={'instances': [[0.0]]}, timeout=30).json() == {'predictions': [[0.0]]}

def test_ignored_flags_are_announced_once_each(cfg_server):
    srv, where = cfg_server
    assert srv.warnings == [
        "mlinfra serve: ignoring --num_load_threads=4: versions load one after another, on the manager's thread",
        "mlinfra serve: ignoring --ssl_config_file=/etc/ssl.config: no TLS here: gRPC listens without transport security, "
        "and a client set up for TLS will not connect"]   # --saved_model_tags=serve, --enable_profiler=true, ... are the defaults

def test_config_file_is_read_once_while_versions_are_polled(cfg_server, models):
    "--model_config_file_poll_wait_seconds=0: a model added to the file is not served; a version added to a folder is."
    srv, where = cfg_server
    write_text_proto(server_config(model_config('half', where['half']), model_config('spin', models/'spin'),
                                   model_config('late', models/'half')), where['config'])
    shutil.copytree(models/'half_v2', where['half'].parent/'.tmp-2'); os.rename(where['half'].parent/'.tmp-2', where['half']/'2')
    url = f"http://127.0.0.1:{where['rest']}"
    deadline = time.monotonic() + 20
    while httpx.post(f'{url}/v1/models/half:predict', json={'instances': [0.0]}, timeout=30).json() != {'predictions': [3.0]}:
        assert time.monotonic() < deadline, "version 2 was never served"
        time.sleep(0.1)
    time.sleep(0.5)   # a few more polls of 0.2 s
    assert httpx.get(f'{url}/v1/models/late', timeout=30).status_code == 404


# --- REST off ------------------------------------------------------------------------------------------------------------

def test_rest_api_port_0_turns_rest_off(norest):
    srv, where = norest
    assert f"serving gRPC on 127.0.0.1:{where['port']}, no REST (Ctrl-C stops)" in srv.said
    assert srv.listening() == {where['port']}
    assert status_grpc(f"127.0.0.1:{where['port']}", 'half') == [(1, 'AVAILABLE')]


def test_sigterm_stops_cleanly_and_removes_the_socket(launched):
    "Last of the subprocess tests: each server stops on SIGTERM with status 0; the socket files are gone."
    for key, (srv, where) in launched.items():
        srv.ready()
        assert srv.stop() == 0, (key, srv.err.read_text()[-2000:])
        if 'sock' in where: assert not where['sock'].exists(), key


# --- in this process: body size, raw bytes, threads ----------------------------------------------------------------------

def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read(inproc):
    "400 MiB sent chunked at a 1 MiB limit: the 413 arrives after a few MiB, and the server's memory does not grow by the body."
    me, chunk = psutil.Process(), b'[' + b'1.0,' * (256 << 10)   # 1 MiB of a JSON array that never ends
    rss0, sent, reply = me.memory_info().rss, 0, b''
    with socket.create_connection(('127.0.0.1', inproc.rest_port), timeout=30) as s:
        s.sendall(b'POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n')
        while sent < (400 << 20):
            s.sendall(b'%x\r\n%s\r\n' % (len(chunk), chunk)); sent += len(chunk)
            if select.select([s], [], [], 0)[0]: reply = s.recv(65536); break
        else: reply = s.recv(65536)
    assert reply.startswith(b'HTTP/1.1 413 '), reply[:200]
    assert b'Request body larger than 1048576 bytes' in reply
    assert sent < (32 << 20), f"the reply came only after {sent >> 20} MiB"
    assert me.memory_info().rss - rss0 < (100 << 20)

def test_a_declared_length_over_the_limit_is_refused_at_once(inproc):
    c = http.client.HTTPConnection('127.0.0.1', inproc.rest_port, timeout=30)
    c.putrequest('POST', '/v1/models/half:predict'); c.putheader('Content-Length', str(400 << 20)); c.endheaders()
    r = c.getresponse()   # no body byte sent
    assert r.status == 413 and json.loads(r.read()) == {'error': 'Request body larger than 1048576 bytes'}
    c.close()

@pytest.mark.parametrize('path', ['/tensorflow.serving.PredictionService/Predict', '/tensorflow.serving.PredictionService/GetModelMetadata',
                                  '/tensorflow.serving.ModelService/GetModelStatus', '/tensorflow.serving.ModelService/HandleReloadConfigRequest'])
def test_unparsable_grpc_bytes_are_invalid_argument(inproc, path):
    with grpc.insecure_channel(inproc.grpc_target) as ch:
        call = ch.unary_unary(path, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as e: call(b'\xff\xff\xff\xff not a protocol buffer', timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.value.code(), e.value.details())
    assert e.value.details().startswith("Error parsing message with type 'tensorflow.serving."), e.value.details()
    np.testing.assert_allclose(predict_grpc(inproc.grpc_target, 'half', [2.0]), [3.0])   # the server goes on serving

def test_rest_threads_and_grpc_threads_bound_the_concurrent_model_calls(inproc):
    "Six 0.4 s requests at once on two threads run in three waves (over a second); on anyio's 40, in one."
    def rest(_): return httpx.post(f'{inproc.rest_url}/v1/models/spin:predict', json={'instances': [[0.4]]}, timeout=30).status_code
    def grpc_call(_):
        req = predict_pb2.PredictRequest(); req.model_spec.name = 'spin'
        req.inputs['x'].CopyFrom(tf.make_tensor_proto(np.array([[0.4]], np.float32)))
        with grpc.insecure_channel(inproc.grpc_target) as ch: prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, timeout=30)
        return 200
    for call in (rest, grpc_call):
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(6) as ex: assert list(ex.map(call, range(6))) == [200] * 6
        assert time.monotonic() - t0 >= 1.15, (call.__name__, time.monotonic() - t0)

def test_enable_batching_without_a_file_leaves_every_limit_to_tf_servings_defaults(tmp_path):
    "TF Serving's server.cc sets no BatchingParameters field for a bare --enable_batching: the scheduler's defaults apply."
    from mlinfra_nb.cli import _server_options
    from mlinfra_nb.serve.server import Batcher
    opts = _server_options(build_parser().parse_args(['serve', f"--model_base_path={tmp_path}", '--enable_batching']))
    assert [f.name for f, _ in opts['batching'].ListFields()] == []
    b = Batcher(opts['batching'])
    try: assert (b.max_batch, b.timeout, b.max_enqueued) == (1000, 0, 10)
    finally: b.close()
    assert _server_options(build_parser().parse_args(['serve', f"--model_base_path={tmp_path}"]))['batching'] is None
