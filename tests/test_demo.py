"""`mlinfra demo` (the README's `make demo`) runs the lifecycle end to end: a drift alert retrains, the canary is promoted on live metrics.
A canary that does not hold is then rolled back, in the workspace the demo left (one demo for the module, not a run of its own)."""
import json, os, re, subprocess
from pathlib import Path
import pandas as pd, pytest
from conftest import clean_environment, mlinfra_script
from mlinfra_nb.lake import Lake
from mlinfra_nb.registry import ModelRegistry
from mlinfra_nb.pipeline import Pipeline
from mlinfra_nb.workspace import Workspace

@pytest.fixture(scope='module')
def demo(tmp_path_factory)->tuple[Path, subprocess.CompletedProcess]:
    "One `mlinfra demo` run: the folder it was given and what it printed. Its workspace is `demo/<time>` under that folder."
    home = tmp_path_factory.mktemp('demo')
    r = subprocess.run([mlinfra_script(), 'demo', '--home', str(home), '--rows', '20000'], env=clean_environment(home/'home'),
                       capture_output=True, text=True, timeout=1200)
    return home, r

def test_demo_end_to_end(demo):
    base, r = demo
    assert r.returncode == 0, r.stderr[-4000:]
    out = r.stdout
    assert re.search(r'mlinfra demo finished in \d+ s', out), out[-2000:]
    for stage in range(1, 8): assert f"[{stage}/7]" in out, out
    assert 'started by alert fraud-drift' in out and 'canary v2 promoted' in out, out
    # the dashboard judges at version 1's operating threshold, not 0.5: recall is not 0 by construction on windows that had fraud
    m = re.search(r"dashboard: threshold ([-\d.e]+) \(version 1's operating point\); best recall ([\d.]+) over (\d+) windows with fraud", out)
    assert m and float(m.group(1)) < 0.5 and float(m.group(2)) > 0 and int(m.group(3)) > 0, out[-3000:]
    home = next((base/'demo').iterdir())
    ws = Workspace(home, env={})
    pipe = Pipeline(ws)
    runs = pipe.runs()
    assert list(runs.status) == ['succeeded', 'succeeded'] and list(runs.started_by) == ['manual', 'alert fraud-drift']
    second = pipe.info(runs.id.iloc[-1])
    assert second['trigger']['rule'] == 'fraud-drift' and second['trigger']['metric'] == 'share_drifted'
    verdict = json.loads(pipe.repo.get('main', f"runs/{second['id']}/monitor.json"))
    assert verdict['action'] == 'promote' and min(verdict['labelled'].values()) >= 500
    registry = ModelRegistry(pipe.lake, workspace=ws)
    assert {k: v for k, v in registry.aliases('fraud').items() if k in ('production', 'stable')} == {'production': 2, 'stable': 2}
    moves = registry.alias_history('fraud')
    assert ((moves.alias == 'canary') & (moves.to == '2')).any() and ((moves.alias == 'production') & (moves.to == '2')).any()
    history = pd.read_json(home/'serve'/'config'/'fraud.rollout.jsonl', lines=True)
    assert {'canary: load', 'canary: label', 'promote: label', 'promote: retire'} <= set(history.action), list(history.action)
    for f in ('monitoring.html', 'monitoring.png'): assert (home/'dashboard'/f).stat().st_size > 10_000
    # each step's executed notebook is in the lake, on main, beside the run's outputs
    assert len([o for o in pipe.repo.list('main', prefix=f"runs/{second['id']}/") if o.path.endswith('.ipynb')]) == 8

def test_canary_that_does_not_hold_is_rolled_back(demo, monkeypatch):
    """A canary whose live AUC falls short is rolled back; the run fails at the monitor step, `main` and production stay.
    It starts where the demo ended (version 2 in production and stable, served alone), so it runs after `test_demo_end_to_end`."""
    for k in [k for k in os.environ if k.startswith(('MLINFRA_', 'LAKEFS_'))]: monkeypatch.delenv(k)   # the step kernels read the environment
    from mlinfra_nb.demo import Traffic
    from mlinfra_nb.monitor import MonitorStore
    from mlinfra_nb.serve import ModelServer, RestClient
    assert demo[1].returncode == 0, f"the demo this test starts from failed:\n{demo[1].stderr[-4000:]}"
    ws = Workspace(next((demo[0]/'demo').iterdir()), env={})
    pipe = Pipeline(ws)
    main_before = pipe.repo.head('main').id
    conf = ws.path('serve', 'config')
    registry = ModelRegistry(pipe.lake, workspace=ws)
    before = registry.aliases('fraud')
    inputs = sorted(registry.get('fraud', alias='production').meta['input_schema'])
    rows = pipe.repo.table('main', 'features/valid').df()
    with ModelServer(conf/'models.config', rest_port=0, grpc_port=0, poll_seconds=0.5) as server:
        traffic = Traffic(RestClient(server.rest_url), MonitorStore(ws), 'fraud', rows, inputs, conf/'models.config', 0.5, rate=100, repeat=True).start()
        try:   # the gate is opened wide (margin -1) so the run reaches the canary; the canary must beat stable by a whole AUC point to stay
            second = pipe.run(params={'rows': 4000, 'epochs': 1, 'seed': 1, 'margin': -1.0, 'server': server.rest_url, 'grpc': server.grpc_target,
                                      'min_labelled': 100, 'max_auc_drop': -1.0, 'watch_seconds': 240.0}, progress=False)
        finally: traffic.stop()
    assert (second['status'], second['failed_step']) == ('failed', 'monitor'), second['error']
    assert 'the canary did not hold' in second['error'] and 'rolled back' in second['error']
    assert pipe.repo.head('main').id == main_before
    aliases = registry.aliases('fraud')
    assert (aliases['production'], aliases['stable'], 'canary' in aliases) == (before['production'], before['stable'], False), (before, aliases)
    history = pd.read_json(conf/'fraud.rollout.jsonl', lines=True)
    assert list(history.action)[-1] == 'rollback' and history.labels_after.iloc[-1] == {'stable': before['stable']}
    assert traffic.failed == 0
