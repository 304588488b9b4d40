"""`mlinfra run` killed with SIGKILL in the middle of a step never touches `main`, and `--resume` finishes the run."""
import os, signal, subprocess, time
import pytest
from mlinfra_nb.pipeline import Pipeline
from mlinfra_nb.registry import ModelRegistry
from mlinfra_nb.workspace import Workspace

def test_kill_mid_step_then_resume(tmp_path, clean_env, mlinfra):
    home = tmp_path/'home'
    pipe = Pipeline(Workspace(home, env={}))
    main_before = pipe.repo.head('main').id
    p = subprocess.Popen([mlinfra, 'run', '--home', str(home), '-p', 'rows', '3000', '-p', 'epochs', '1'], env=clean_env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline, rid = time.monotonic() + 240, None
    try:
        while time.monotonic() < deadline:                       # wait until the train step is running, then kill the whole run
            assert p.poll() is None, p.communicate()[1][-3000:]
            runs = pipe.runs()
            if len(runs):
                rid = runs.id.iloc[-1]
                st = pipe.info(rid)['step_status']
                if ((st.step == 'train') & (st.status == 'running')).any(): break
            time.sleep(0.2)
        else: pytest.fail("the train step never started")
        time.sleep(2)                                            # well inside the step: the kernel is training
    finally:
        os.killpg(p.pid, signal.SIGKILL); p.wait()               # the runner and its kernel, by process group id
    rec = pipe.info(rid)
    assert rec['status'] == 'running'
    assert dict(zip(rec['step_status'].step, rec['step_status'].status)) == {'ingest': 'succeeded', 'validate': 'succeeded', 'features': 'succeeded', 'train': 'running'}
    assert pipe.repo.head('main').id == main_before              # main untouched by the killed run
    r = subprocess.run([mlinfra, 'run', '--home', str(home), '--resume', rid], env=clean_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = pipe.info(rid)
    assert rec['status'] == 'succeeded' and set(rec['step_status'].status) == {'succeeded'}
    assert pipe.repo.head('main').id == rec['merge_commit'] != main_before
    assert ModelRegistry(pipe.lake, workspace=pipe.workspace).aliases('fraud') == {'candidate': 1, 'stable': 1, 'production': 1}
    shown = subprocess.run([mlinfra, 'runs', rid, '--home', str(home)], env=clean_env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and f"run {rid}: succeeded" in shown.stdout and 'register' in shown.stdout, shown.stdout

def test_bad_invocations_exit_nonzero_with_one_line(tmp_path, clean_env, mlinfra):
    home = str(tmp_path/'home')
    (tmp_path/'bad.yaml').write_text('epochs: [1, 2')
    (tmp_path/'list.yaml').write_text('- 1\n- 2\n')
    for argv, msg in [(['run', '--steps', 'ingest,publish'], "unknown step(s) ['publish']"),
                      (['run', '-p', 'epochs', 'many'], "parameter 'epochs' must be int"),
                      (['run', '--params', str(tmp_path/'missing.yaml')], 'no parameters file'),
                      (['run', '--params', str(tmp_path/'bad.yaml')], 'is not valid YAML'),
                      (['run', '--params', str(tmp_path/'list.yaml')], 'must hold a mapping'),
                      (['run', '--resume', '20990101-000000-ffff'], "no pipeline run '20990101-000000-ffff'"),
                      (['run', '--resume', 'x', '-p', 'epochs', '1'], 'give no steps or parameters')]:
        r = subprocess.run([mlinfra, *argv, '--home', home], env=clean_env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, (argv, r.stdout, r.stderr)
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)
