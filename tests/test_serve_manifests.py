"Manifests for the real tensorflow/serving image: docker run, compose and Kubernetes built from the configs the toolkit writes."
import collections, http.server, os, shlex, socket, stat, subprocess, threading
from pathlib import Path, PurePosixPath
import pytest, yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2 as msc
from mlinfra_nb.workspace import InvalidInput, NotFound
from mlinfra_nb.serve.config import PROMETHEUS_PATH, model_config, read_models_config, server_config, write_configs
from mlinfra_nb.serve.manifests import (CONFIG_DIR, TF_SERVING_VERSION, compose, container_config, default_model_dirs,
                                        docker_run, health_script, image_ref, kubernetes, server_args, serving_deployment,
                                        write_compose, write_container_configs, write_manifests)

FLAGS = {'--port', '--rest_api_port', '--model_config_file', '--model_config_file_poll_wait_seconds', '--enable_batching',
         '--batching_parameters_file', '--monitoring_config_file'}

@pytest.fixture
def host(tmp_path):
    "Two models on the host (one with request logs) and the configs write_configs puts beside them."
    models = tmp_path/'models'
    for m in ('fraud', 'churn'): (models/m/'1').mkdir(parents=True)
    cfg = server_config(model_config('fraud', models/'fraud', [1], labels={'stable': 1}, log_requests=0.5),
                        model_config('churn', models/'churn', 'latest', num_latest=2))
    return tmp_path, cfg, write_configs(tmp_path/'host-config', cfg)

@pytest.fixture
def dep(host): return serving_deployment(host[2])

@pytest.fixture
def config_dir(dep, tmp_path):
    write_container_configs(dep, tmp_path/'container-config')
    return tmp_path/'container-config'

def server_flags(argv:list[str], image:str)->list[str]:
    "The arguments given to the server: everything after the image."
    return argv[argv.index(image) + 1:]

def flag_names(args): return [a.split('=', 1)[0] for a in args]

def base_paths(text:str)->list[str]:
    return [c.base_path for c in text_format.Parse(text, msc.ModelServerConfig()).model_config_list.config]

# --- the container's models.config -----------------------------------------------------------------------------------

def test_container_config_moves_base_paths_and_log_prefixes(host):
    tmp, cfg, _ = host
    before = msc.ModelServerConfig(); before.CopyFrom(cfg)
    out = container_config(cfg, default_model_dirs(cfg))
    assert [c.base_path for c in out.model_config_list.config] == ['/models/fraud', '/models/churn']
    assert out.model_config_list.config[0].logging_config.log_collector_config.filename_prefix == '/models/fraud/logs/requests'
    assert out.model_config_list.config[0].version_labels['stable'] == 1          # everything else is kept
    assert out.model_config_list.config[1].model_version_policy.latest.num_versions == 2
    assert cfg == before                                                           # the host config is untouched

def test_container_config_picks_the_innermost_mount_and_keeps_remote_paths(tmp_path):
    cfg = server_config(model_config('a', tmp_path/'m'/'a'), model_config('b', tmp_path/'m'/'deep'/'b'),
                        model_config('r', 'gs://bucket/models/r'))
    out = container_config(cfg, {tmp_path/'m': '/models', str(tmp_path/'m'/'deep') + '/': '/deep'})
    assert [c.base_path for c in out.model_config_list.config] == ['/models/a', '/deep/b', 'gs://bucket/models/r']

def test_container_config_resolves_relative_host_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = server_config(model_config('a', 'models/a'))
    assert container_config(cfg, {'models': '/srv/models'}).model_config_list.config[0].base_path == '/srv/models/a'

def test_default_model_dirs_mount_each_local_model_at_its_name(host):
    tmp, cfg, _ = host
    assert default_model_dirs(cfg) == {str(tmp/'models'/'fraud'): '/models/fraud', str(tmp/'models'/'churn'): '/models/churn'}

@pytest.mark.parametrize('dirs, message', [
    ({'{tmp}/models/fraud': '/models/fraud'}, "the base path of model 'churn', {tmp}/models/churn is not under any mounted model dir"),
    ({}, "is not under any mounted model dir (none)"),
    ({'{tmp}/models': 'models'}, "container dir 'models' must be an absolute path"),
    ({'{tmp}/models': '/'}, "must be an absolute path below '/'"),
    ({'{tmp}/models': '/a/../b'}, "must be an absolute path"),
    ({'{tmp}/models': '/config'}, "overlaps /config"),
    ({'{tmp}/models': '/'.join(['', 'config', 'x'])}, "overlaps /config"),
    ({'{tmp}/models/fraud': '/m', '{tmp}/models/churn': '/m/churn'}, "container dir /m/churn overlaps /m"),
    ({'{tmp}/models': '/a', '{tmp}/models/': '/b'}, "is mounted twice"),
])
def test_container_config_refuses_bad_mounts(host, dirs, message):
    tmp, cfg, _ = host
    with pytest.raises(InvalidInput, match=None) as e:
        container_config(cfg, {k.format(tmp=tmp): v for k, v in dirs.items()})
    assert message.format(tmp=tmp) in str(e.value)

def test_request_logs_outside_the_mounts_are_refused(tmp_path):
    cfg = server_config(model_config('a', tmp_path/'m'/'a', log_requests=1, log_prefix=str(tmp_path/'logs'/'a')))
    with pytest.raises(InvalidInput, match="the request log prefix of model 'a', .* is not under any mounted model dir"):
        container_config(cfg, {tmp_path/'m': '/models'})

def test_configs_without_models_are_refused():
    with pytest.raises(InvalidInput, match="serves no models"): container_config(msc.ModelServerConfig(), {})
    with pytest.raises(InvalidInput, match="serves no models"): container_config(server_config(), {})

# --- the deployment ----------------------------------------------------------------------------------------------------

def test_deployment_from_the_written_configs(dep, host):
    tmp, cfg, files = host
    assert dep.image == f'tensorflow/serving:{TF_SERVING_VERSION}' and dep.gpus == 0 and dep.models == ['fraud', 'churn']
    assert base_paths(dep.files['models.config']) == ['/models/fraud', '/models/churn']
    assert dep.files['batching.config'] == files['batching_parameters_file'].read_text()
    assert dep.files['monitoring.config'] == files['monitoring_config_file'].read_text()
    assert dep.metrics_path == PROMETHEUS_PATH
    assert {m.container: m.writable for m in dep.mounts} == {'/models/fraud': True, '/models/churn': False}
    assert serving_deployment(tmp/'host-config') == dep                     # the folder works as well as the dict

def test_optional_files_and_polling_leave_their_flags_out(host):
    files = host[2]
    args = server_args(serving_deployment({'model_config_file': files['model_config_file']}, poll_seconds=0))
    assert args == ['--port=8500', '--rest_api_port=8501', '--model_config_file=/config/models.config']
    args = server_args(serving_deployment(files, poll_seconds=5, grpc_port=9000, rest_port=9001))
    assert set(flag_names(args)) == FLAGS and '--model_config_file_poll_wait_seconds=5' in args
    assert args[:2] == ['--port=9000', '--rest_api_port=9001']

def test_image_variants():
    assert image_ref() == 'tensorflow/serving:2.19.1'
    assert image_ref('2.18.0', 'gpu') == 'tensorflow/serving:2.18.0-gpu'
    assert image_ref(image='registry.local:5000/tensorflow/serving') == 'registry.local:5000/tensorflow/serving:2.19.1'
    for bad, message in [(dict(variant='tpu'), "unknown image variant 'tpu'"), (dict(variant='GPU'), "unknown image variant"),
                         (dict(version='2.19 .1'), "is not a Docker image tag"), (dict(version='2.19.1-gpu'), "variant='gpu'"),
                         (dict(image='Tensorflow/Serving'), "is not a Docker image repository")]:
        with pytest.raises(InvalidInput, match=None) as e: image_ref(**bad)
        assert message in str(e.value)

@pytest.mark.parametrize('kwargs, message', [
    (dict(grpc_port=0), "grpc_port must be a port number between 1 and 65535, not 0"),
    (dict(rest_port=70000), "rest_port must be a port number between 1 and 65535, not 70000"),
    (dict(rest_port='8501'), "rest_port must be a port number"),
    (dict(rest_port=True), "rest_port must be a port number"),
    (dict(grpc_port=8501), "grpc_port and rest_port are both 8501"),
    (dict(variant='arm'), "unknown image variant 'arm'"),
    (dict(gpus=1), "GPUs need variant='gpu'"),
    (dict(variant='gpu', gpus=0), "the GPU image needs gpus >= 1"),
    (dict(variant='gpu', gpus=-1), "gpus must be a whole number >= 0"),
    (dict(name='TF_Serving'), "must be a DNS label"),
    (dict(name='x' * 64), "must be a DNS label"),
    (dict(poll_seconds=-1), "poll_seconds must be a whole number of seconds >= 0"),
    (dict(model_dirs={'/nowhere': '/models'}), "is not under any mounted model dir (/nowhere)"),
])
def test_deployment_refuses_bad_input(host, kwargs, message):
    with pytest.raises(InvalidInput) as e: serving_deployment(host[2], **kwargs)
    assert message in str(e.value)

def test_deployment_refuses_missing_broken_or_unknown_config_files(host, tmp_path):
    files = host[2]
    with pytest.raises(InvalidInput, match="no models.config among the configs"): serving_deployment(tmp_path/'empty-folder')
    with pytest.raises(InvalidInput, match="unknown config file keys"): serving_deployment({**files, 'platform_config_file': 'x'})
    (tmp_path/'broken').mkdir(); (tmp_path/'broken'/'models.config').write_text('model_config_list { config { nam: "x" } }')
    with pytest.raises(InvalidInput, match="Error parsing text-format tensorflow.serving.ModelServerConfig: 1:30: "): serving_deployment(tmp_path/'broken')
    with pytest.raises(NotFound, match="no config file"): serving_deployment({'model_config_file': tmp_path/'none.config'})

def test_model_names_that_are_not_url_paths_are_refused(tmp_path):
    files = write_configs(tmp_path/'c', server_config(model_config('fraud/v2', tmp_path/'m')))
    with pytest.raises(InvalidInput, match=r"model names \['fraud/v2'\] cannot be served at /v1/models/<name>"): serving_deployment(files)

# --- docker run --------------------------------------------------------------------------------------------------------

def test_docker_line_parses_and_passes_each_flag_once(dep, config_dir):
    argv = shlex.split(docker_run(dep, config_dir))
    assert argv[:2] == ['docker', 'run'] and argv[argv.index('--name') + 1] == 'tf-serving'
    assert argv[argv.index('--entrypoint') + 1] == 'tensorflow_model_server'
    args = server_flags(argv, dep.image)
    assert args == server_args(dep)
    counts = collections.Counter(flag_names(args))
    assert set(counts) == FLAGS and set(counts.values()) == {1}
    assert '--enable_batching=true' in args and '--rest_api_port=8501' in args and '--port=8500' in args
    assert '--gpus' not in argv

def test_docker_publishes_on_localhost_only(dep, config_dir):
    argv = shlex.split(docker_run(dep, config_dir))
    published = [argv[i + 1] for i, a in enumerate(argv) if a == '-p']
    assert published == ['127.0.0.1:8500:8500', '127.0.0.1:8501:8501']
    assert not any(a.startswith('0.0.0.0') for a in argv)
    argv = shlex.split(docker_run(dep, config_dir, host='::1'))
    assert [argv[i + 1] for i, a in enumerate(argv) if a == '-p'] == ['[::1]:8500:8500', '[::1]:8501:8501']

def test_docker_mounts_the_models_and_the_container_configs(dep, config_dir, host):
    tmp = host[0]
    argv = shlex.split(docker_run(dep, config_dir))
    mounts = [dict(kv.split('=', 1) if '=' in kv else (kv, True) for kv in argv[i + 1].split(',')) for i, a in enumerate(argv) if a == '--mount']
    by_target = {m['target']: m for m in mounts}
    assert set(by_target) == {'/models/fraud', '/models/churn', CONFIG_DIR}
    assert by_target['/models/fraud']['source'] == str(tmp/'models'/'fraud') and 'readonly' not in by_target['/models/fraud']
    assert by_target['/models/churn'].get('readonly') is True and by_target[CONFIG_DIR].get('readonly') is True
    # every file the server is told to read is in the folder bound at /config, and names container paths
    for a in server_flags(argv, dep.image):
        if '=/config/' in a:
            f = Path(by_target[CONFIG_DIR]['source'])/PurePosixPath(a.split('=', 1)[1]).relative_to(CONFIG_DIR)
            assert f.is_file() and f.read_text() == dep.files[f.name]
    paths = base_paths((config_dir/'models.config').read_text())
    assert all(any(PurePosixPath(p).is_relative_to(t) for t in by_target if t != CONFIG_DIR) for p in paths)

def test_docker_quotes_odd_paths(tmp_path):
    models = tmp_path/'my models $HOME'/"o'brien"
    (models/'1').mkdir(parents=True)
    files = write_configs(tmp_path/'c', server_config(model_config('m', models)))
    d = serving_deployment(files)
    write_container_configs(d, tmp_path/'cfg dir')
    argv = shlex.split(docker_run(d, tmp_path/'cfg dir'))
    assert f'type=bind,source={models},target=/models/m,readonly' in argv
    assert f"type=bind,source={tmp_path/'cfg dir'},target=/config,readonly" in argv

def test_docker_gpu(host, tmp_path):
    d = serving_deployment(host[2], variant='gpu', gpus=2)
    write_container_configs(d, tmp_path/'g')
    argv = shlex.split(docker_run(d, tmp_path/'g'))
    assert argv[argv.index('--gpus') + 1] == '2' and f'tensorflow/serving:{TF_SERVING_VERSION}-gpu' in argv

def test_docker_refuses_host_configs_missing_configs_and_bad_input(dep, config_dir, host, tmp_path):
    with pytest.raises(InvalidInput, match="models.config is not the container's models.config"): docker_run(dep, tmp_path/'host-config')
    with pytest.raises(NotFound, match="is missing; write the container's configs"): docker_run(dep, tmp_path/'nowhere')
    with pytest.raises(InvalidInput, match="host must be an IP address"): docker_run(dep, config_dir, host='localhost')
    models = tmp_path/'a,b'
    files = write_configs(tmp_path/'c2', server_config(model_config('m', models)))
    d = serving_deployment(files)
    write_container_configs(d, tmp_path/'c3')
    with pytest.raises(InvalidInput, match="contains ',', which docker --mount cannot take"): docker_run(d, tmp_path/'c3')

# --- compose -----------------------------------------------------------------------------------------------------------

def test_compose_yaml_loads_and_matches_docker(dep, config_dir, tmp_path):
    doc = yaml.safe_load(write_compose(tmp_path/'compose.yaml', dep, config_dir).read_text())
    svc = doc['services']['tf-serving']
    assert svc['image'] == dep.image and svc['entrypoint'] == ['tensorflow_model_server'] and svc['command'] == server_args(dep)
    counts = collections.Counter(flag_names(svc['command']))
    assert set(counts) == FLAGS and set(counts.values()) == {1}
    assert svc['ports'] == ['127.0.0.1:8500:8500', '127.0.0.1:8501:8501']
    vols = {v['target']: v for v in svc['volumes']}
    assert vols[CONFIG_DIR]['source'] == str(config_dir) and vols[CONFIG_DIR]['read_only'] is True
    assert vols['/models/fraud']['read_only'] is False and vols['/models/churn']['read_only'] is True
    assert all(v['type'] == 'bind' and Path(v['source']).is_dir() for v in svc['volumes'])
    assert svc['healthcheck']['test'][:3] == ['CMD', 'bash', '-c'] and 'deploy' not in svc

def test_compose_doubles_dollars_and_reserves_gpus(tmp_path):
    models = tmp_path/'m$x'
    (models/'1').mkdir(parents=True)
    d = serving_deployment(write_configs(tmp_path/'c', server_config(model_config('m', models))), variant='gpu')
    write_container_configs(d, tmp_path/'cfg')
    svc = yaml.safe_load(yaml.safe_dump(compose(d, tmp_path/'cfg')))['services']['tf-serving']
    assert svc['volumes'][0]['source'] == str(models).replace('$', '$$')
    assert svc['deploy']['resources']['reservations']['devices'] == [{'driver': 'nvidia', 'count': 1, 'capabilities': ['gpu']}]
    assert svc['image'].endswith('-gpu')

def test_compose_refuses_the_host_configs(dep, tmp_path):
    with pytest.raises(InvalidInput, match="is not the container's models.config"): compose(dep, tmp_path/'host-config')

class _Status(http.server.BaseHTTPRequestHandler):
    "Answers /v1/models/<name> like TF Serving, from a dict name -> state."
    states = {}
    def do_GET(self):
        name = self.path.removeprefix('/v1/models/')
        if name not in self.states:
            self.send_response(404); self.end_headers(); self.wfile.write(b'{ "error": "Servable not found" }'); return
        self.send_response(200); self.send_header('Content-Type', 'application/json'); self.end_headers()
        self.wfile.write(('{\n "model_version_status": [\n  {\n   "version": "1",\n   "state": "%s",\n   "status": {\n'
                          '    "error_code": "OK",\n    "error_message": ""\n   }\n  }\n ]\n}\n' % self.states[name]).encode())
    def log_message(self, *a): pass

@pytest.fixture
def status_server():
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Status)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown(); srv.server_close()

def test_health_script_asks_every_model(host, status_server):
    d = serving_deployment(host[2], rest_port=status_server.server_address[1])
    script = health_script(d)
    assert [f'/v1/models/{m}' in script for m in d.models] == [True, True] and '$' not in script
    run = lambda: subprocess.run(['bash', '-c', script], timeout=10).returncode
    _Status.states = {'fraud': 'AVAILABLE', 'churn': 'AVAILABLE'}
    assert run() == 0
    _Status.states = {'fraud': 'AVAILABLE', 'churn': 'LOADING'}
    assert run() != 0
    _Status.states = {'fraud': 'AVAILABLE'}
    assert run() != 0

# --- Kubernetes --------------------------------------------------------------------------------------------------------

def k8s(dep, **kw):
    "The objects as a cluster would read them: through YAML."
    return list(yaml.safe_load_all(yaml.safe_dump_all(kubernetes(dep, **kw))))

def test_kubernetes_objects(dep):
    cm, deploy, svc = k8s(dep)
    assert [o['kind'] for o in (cm, deploy, svc)] == ['ConfigMap', 'Deployment', 'Service']
    assert [o['apiVersion'] for o in (cm, deploy, svc)] == ['v1', 'apps/v1', 'v1']
    pod = deploy['spec']['template']
    assert deploy['spec']['selector']['matchLabels'].items() <= pod['metadata']['labels'].items()
    assert svc['spec']['selector'].items() <= pod['metadata']['labels'].items()
    assert svc['spec']['type'] == 'ClusterIP'
    c, = pod['spec']['containers']
    assert c['image'] == dep.image and c['command'] == ['tensorflow_model_server'] and c['args'] == server_args(dep)
    counts = collections.Counter(flag_names(c['args']))
    assert set(counts) == FLAGS and set(counts.values()) == {1}
    ports = {p['name']: p['containerPort'] for p in c['ports']}
    assert ports == {'grpc': 8500, 'http': 8501}
    assert {p['targetPort']: p['port'] for p in svc['spec']['ports']} == ports
    assert 'resources' not in c
    assert pod['metadata']['annotations'] == {'prometheus.io/scrape': 'true', 'prometheus.io/port': '8501', 'prometheus.io/path': PROMETHEUS_PATH}

def test_kubernetes_args_name_files_in_the_config_map(dep):
    cm, deploy, _ = k8s(dep)
    pod = deploy['spec']['template']['spec']
    c = pod['containers'][0]
    config_mount, = [m for m in c['volumeMounts'] if m['mountPath'] == CONFIG_DIR]
    volume, = [v for v in pod['volumes'] if v['name'] == config_mount['name']]
    assert volume['configMap']['name'] == cm['metadata']['name'] and config_mount['readOnly'] is True
    named = [PurePosixPath(a.split('=', 1)[1]) for a in c['args'] if '=/' in a]
    assert named and all(p.parent == PurePosixPath(CONFIG_DIR) and p.name in cm['data'] for p in named)
    assert sorted(p.name for p in named) == sorted(cm['data'])
    assert cm['data']['models.config'] == dep.files['models.config']

def test_kubernetes_models_config_names_mounted_container_paths(dep, host):
    tmp, cfg, _ = host
    cm, deploy, _ = k8s(dep)
    c = deploy['spec']['template']['spec']['containers'][0]
    mounted = [m['mountPath'] for m in c['volumeMounts'] if m['mountPath'] != CONFIG_DIR]
    paths = base_paths(cm['data']['models.config'])
    assert paths == ['/models/fraud', '/models/churn']
    assert all(any(PurePosixPath(p).is_relative_to(m) for m in mounted) for p in paths)
    assert not any(str(tmp) in v for v in cm['data'].values())
    assert read_models_config(host[2]['model_config_file']) == cfg                     # the host file still names host paths

def test_kubernetes_probes(dep):
    for model in dep.models:
        c = k8s(dep, ready_model=model)[1]['spec']['template']['spec']['containers'][0]
        assert c['readinessProbe']['httpGet'] == {'path': f'/v1/models/{model}', 'port': 8501}
        assert c['startupProbe']['httpGet'] == {'path': f'/v1/models/{model}', 'port': 8501}
        assert c['livenessProbe'] == {'tcpSocket': {'port': 8500}, 'periodSeconds': 10, 'failureThreshold': 3}
    c = k8s(dep)[1]['spec']['template']['spec']['containers'][0]
    assert c['readinessProbe']['httpGet']['path'] == '/v1/models/fraud'

def test_kubernetes_volumes_hostpath_or_claims(dep, host):
    tmp = host[0]
    vols = {v['name']: v for v in k8s(dep)[1]['spec']['template']['spec']['volumes']}
    assert vols['models-0']['hostPath'] == {'path': str(tmp/'models'/'fraud'), 'type': 'Directory'}
    pod = k8s(dep, claims={'/models/churn': 'churn-models', '/models/fraud': 'fraud-models'})[1]['spec']['template']['spec']
    vols = {v['name']: v for v in pod['volumes']}
    mounts = {m['name']: m for m in pod['containers'][0]['volumeMounts']}
    claim = {mounts[n]['mountPath']: v['persistentVolumeClaim'] for n, v in vols.items() if 'persistentVolumeClaim' in v}
    assert claim == {'/models/fraud': {'claimName': 'fraud-models', 'readOnly': False},
                     '/models/churn': {'claimName': 'churn-models', 'readOnly': True}}
    assert not any('hostPath' in v for v in pod['volumes'])

def test_kubernetes_gpu_replicas_service_type_and_resources(host):
    d = serving_deployment(host[2], variant='gpu')
    _, deploy, svc = k8s(d, replicas=3, service_type='LoadBalancer', resources={'requests': {'cpu': '2', 'memory': '4Gi'}})
    c = deploy['spec']['template']['spec']['containers'][0]
    assert c['resources'] == {'requests': {'cpu': '2', 'memory': '4Gi'}, 'limits': {'nvidia.com/gpu': 1}}
    assert c['image'] == f'tensorflow/serving:{TF_SERVING_VERSION}-gpu'
    assert deploy['spec']['replicas'] == 3 and svc['spec']['type'] == 'LoadBalancer'

@pytest.mark.parametrize('kwargs, message', [
    (dict(ready_model='spam'), "ready_model 'spam' is not served (models: fraud, churn)"),
    (dict(claims={'/data': 'x'}), "claims for ['/data'], which are not mounted"),
    (dict(claims={'/models/fraud': 'Bad_Claim'}), "claim names ['Bad_Claim'] are not Kubernetes names"),
    (dict(replicas=0), "replicas must be a whole number >= 1, not 0"),
    (dict(service_type='Ingress'), "unknown service_type 'Ingress'"),
    (dict(resources={'cpu': '1'}), "resources may only hold 'requests' and 'limits'"),
])
def test_kubernetes_refuses_bad_input(dep, kwargs, message):
    with pytest.raises(InvalidInput) as e: kubernetes(dep, **kwargs)
    assert message in str(e.value)

# --- everything in one folder -------------------------------------------------------------------------------------------

def test_write_manifests(dep, tmp_path):
    out = write_manifests(tmp_path/'deploy', dep, replicas=2)
    assert sorted(p.name for p in (out['config_dir']).iterdir()) == sorted(dep.files)
    script = out['docker_run'].read_text()
    assert script.startswith('#!/bin/sh\n') and out['docker_run'].stat().st_mode & stat.S_IXUSR
    assert subprocess.run(['sh', '-n', str(out['docker_run'])]).returncode == 0
    assert shlex.split(script.splitlines()[1]) == ['exec', *shlex.split(docker_run(dep, out['config_dir']))]
    assert yaml.safe_load(out['compose'].read_text()) == compose(dep, out['config_dir'])
    objs = list(yaml.safe_load_all(out['kubernetes'].read_text()))
    assert objs == k8s(dep, replicas=2) and objs[1]['spec']['replicas'] == 2

@pytest.mark.parametrize('kwargs', [dict(host='anywhere'), dict(ready_model='spam'), dict(service_type='x')])
def test_write_manifests_leaves_nothing_on_bad_input(dep, tmp_path, kwargs):
    with pytest.raises(InvalidInput): write_manifests(tmp_path/'deploy', dep, **kwargs)
    assert not (tmp_path/'deploy').exists()
