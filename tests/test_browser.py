"""The widgets and charts in a real browser: JupyterLab on 127.0.0.1, driven by selenium against Debian's chromium.

Deselect with `-m 'not browser'`. Skipped, with the reason, when chromium, chromedriver or selenium is missing
(`apt-get install -y chromium chromium-driver`; `make test` installs them when it runs as root).
Screenshots go to tests/output/browser/.
"""
import json, os, shutil, socket, subprocess, sys, time, urllib.request, uuid
from pathlib import Path
import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT/'tests'/'output'/'browser'
CHROMIUM, DRIVER = shutil.which('chromium'), shutil.which('chromedriver')
try: import selenium  # noqa: F401
except ImportError: selenium = None
if not (CHROMIUM and DRIVER and selenium):
    pytest.skip("BROWSER TESTS SKIPPED: need chromium, chromedriver (apt-get install -y chromium chromium-driver) and selenium", allow_module_level=True)
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.common.exceptions import ElementNotInteractableException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.support.ui import Select, WebDriverWait

NB = '.jp-NotebookPanel:not(.lm-mod-hidden) '   # the notebook on show

def _free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "JupyterLab on 127.0.0.1 with a token, serving a scratch folder; stopped by pid."
    root, port, token = tmp_path_factory.mktemp('lab'), _free_port(), uuid.uuid4().hex
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'TF_CPP_MIN_LOG_LEVEL': '3', 'MLINFRA_HOME': str(root/'home')}
    p = subprocess.Popen([sys.executable, '-m', 'jupyter', 'lab', '--ip=127.0.0.1', f'--port={port}', '--no-browser', '--allow-root',
                          f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}'],
                         env=env, cwd=root, stdout=open(root/'lab.log', 'wb'), stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    for _ in range(120):
        try: urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=1); break
        except Exception: time.sleep(0.5)
    else: p.kill(); pytest.fail(f"JupyterLab did not start: {(root/'lab.log').read_text()[-2000:]}")
    yield url, token, root
    p.terminate()
    try: p.wait(10)
    except subprocess.TimeoutExpired: p.kill()

@pytest.fixture(scope='module')
def browser():
    o = webdriver.ChromeOptions()
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--window-size=1400,1600'): o.add_argument(a)
    o.binary_location = CHROMIUM
    o.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    d = webdriver.Chrome(service=Service(DRIVER), options=o)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield d
    d.quit()

def open_notebook(lab, browser, name:str, code:str):
    "Write a one-cell notebook, open it in JupyterLab and run the cell; return when the kernel is idle again."
    url, token, root = lab
    nb = {'cells': [{'cell_type': 'code', 'id': 'c1', 'metadata': {}, 'execution_count': None, 'outputs': [], 'source': code}],
          'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}}, 'nbformat': 4, 'nbformat_minor': 5}
    (root/f'{name}.ipynb').write_text(json.dumps(nb))
    browser.get(f'{url}/lab/tree/{name}.ipynb?token={token}&reset')   # reset: only this notebook is open
    wait = WebDriverWait(browser, 90)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, NB + '.jp-Cell .cm-content'))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '.jp-Notebook-ExecutionIndicator[data-status="idle"]'))
    def run_cell(d):   # the editor takes keys once JupyterLab has laid it out; a dialog (kernel choice, news) is accepted first
        for b in d.find_elements(By.CSS_SELECTOR, '.jp-Dialog .jp-mod-accept'): b.click()
        try: ed = d.find_element(By.CSS_SELECTOR, NB + '.jp-Cell .cm-content'); ed.click(); ed.send_keys(Keys.SHIFT, Keys.ENTER); return True
        except (ElementNotInteractableException, StaleElementReferenceException): return False
    prompt = lambda d: d.find_element(By.CSS_SELECTOR, NB + '.jp-Cell .jp-InputPrompt').text.strip()
    for _ in range(3):   # Shift+Enter sent before the kernel is connected can be lost: send it again if the cell never queued
        WebDriverWait(browser, 30, poll_frequency=0.5).until(run_cell)
        try: WebDriverWait(browser, 15).until(lambda d: prompt(d) not in ('[ ]:', '')); break
        except TimeoutException: pass
    try: WebDriverWait(browser, 180).until(lambda d: prompt(d) not in ('[ ]:', '') and '*' not in prompt(d))
    except TimeoutException:
        browser.save_screenshot(str(SHOTS/f'{name}_did_not_finish.png'))
        pytest.fail(f"the {name} cell did not finish in 180 s (prompt {prompt(browser)!r}); it shows:\n{text_of(browser, '.jp-Notebook')[-1500:]}")
    time.sleep(1)
    errors = browser.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], .jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]')
    assert not [e.text for e in errors if 'Traceback' in e.text or 'Error' in e.text], [e.text[-1500:] for e in errors]

BROKEN = ('Error displaying widget', 'Error loading script', 'This chart needs JavaScript', 'could not be drawn', 'Traceback')

def assert_healthy(browser):
    "Fail on a broken widget, a chart that did not draw, or an error in the browser's console."
    out = text_of(browser, '.jp-OutputArea')
    assert not [b for b in BROKEN if b in out], out[-2000:]
    assert not (errs := console_errors(browser)), errs

def console_errors(browser)->list:
    "Severe browser console messages, less JupyterLab's own offline fetches (extension manager, news) and the browser's note on leaving a page."
    return [e['message'] for e in browser.get_log('browser') if e['level'] == 'SEVERE' and not any(
            s in e['message'] for s in ('/lab/api/extensions', '/lab/api/news', 'favicon', 'pypi', "'beforeunload' confirmation panel"))]

def type_into(field, text:str):
    "Replace what `field` holds with `text`, then leave it (ipywidgets take the value on change)."
    field.click(); field.send_keys(Keys.CONTROL, 'a'); field.send_keys(text, Keys.TAB); time.sleep(0.5)

def text_of(browser, css)->str: return browser.find_element(By.CSS_SELECTOR, NB + css).text

def click_button(browser, label:str):
    b = [e for e in browser.find_elements(By.CSS_SELECTOR, 'button.jupyter-button') if e.text.strip() == label and e.is_displayed()]
    assert b, f"no visible button {label!r}"
    b[0].click(); time.sleep(0.8)
    return b[0]

def wait_text(browser, text:str, timeout:float=60):
    "Wait until the cell's output shows `text`; else save a screenshot and fail with what it shows."
    try: WebDriverWait(browser, timeout).until(lambda d: text in text_of(d, '.jp-OutputArea'))
    except TimeoutException:
        browser.save_screenshot(str(SHOTS/'failed.png'))
        pytest.fail(f"waited {timeout} s for {text!r}; the output shows:\n{text_of(browser, '.jp-OutputArea')[-1500:]}")

DASHBOARD = """
import numpy as np, pandas as pd
from IPython.display import HTML, display
from mlinfra_nb.monitor.dashboard import Dashboard, histograms, prediction_quantiles
from mlinfra_nb.monitor.drift import data_drift
from mlinfra_nb.charts import chart_html
rng = np.random.default_rng(0)
ref = pd.DataFrame({'amount': rng.gamma(2, 30, 3000), 'shop': rng.choice(['a', 'b', 'c'], 3000), 'prediction': rng.random(3000)})
ts = pd.Timestamp('2026-03-01', tz='UTC') + pd.to_timedelta(rng.integers(0, 3 * 86_400, 1500), 's')
cur = pd.DataFrame({'amount': rng.gamma(2, 30, 1500) * 2, 'shop': rng.choice(['a', 'b', 'c'], 1500, p=[.6, .2, .2]), 'prediction': rng.random(1500), 'ts': ts})
dr = data_drift(ref, cur, columns=['amount', 'shop', 'prediction'], categorical=['shop'], timestamp='ts', window='day')
board = Dashboard(dr, histograms(ref, cur, ['amount', 'shop', 'prediction'], ['shop']), prediction_quantiles(cur))
display(HTML(chart_html(board.chart, {'renderer': 'svg', 'actions': False})))
display(board.widget())
board
"""

def test_dashboard_draws_offline_and_a_click_changes_the_detail(lab, browser):
    open_notebook(lab, browser, 'dashboard', DASHBOARD)
    marks = NB + '.jp-OutputArea svg.marks, ' + NB + '.jp-OutputArea canvas.marks'
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, marks)) >= 3)   # the HTML, the widget, the default renderer
    assert_healthy(browser)
    svg = browser.find_element(By.CSS_SELECTOR, '.mlinfra-chart svg.marks')
    size = (svg.get_attribute('width'), svg.get_attribute('height'))
    groups = svg.find_elements(By.CSS_SELECTOR, 'g.mark-rect.role-mark')
    heat, detail = groups[0], groups[1]
    before = [p.get_attribute('d') for p in detail.find_elements(By.CSS_SELECTOR, 'path')]
    assert before, 'the detail chart is blank'
    cells = heat.find_elements(By.CSS_SELECTOR, 'path')
    browser.save_screenshot(str(SHOTS/'dashboard_before_click.png'))
    webdriver.ActionChains(browser).move_to_element(cells[-1]).click().perform(); time.sleep(1)
    after = [p.get_attribute('d') for p in svg.find_elements(By.CSS_SELECTOR, 'g.mark-rect.role-mark')[1].find_elements(By.CSS_SELECTOR, 'path')]
    browser.save_screenshot(str(SHOTS/'dashboard_after_click.png'))
    assert after and after != before, 'a click on the heatmap did not change the detail chart'
    test_size = (svg.get_attribute('width'), svg.get_attribute('height'))
    assert test_size == size, f'the chart changed size on a click: {size} -> {test_size}'
    assert_healthy(browser)

LAKE = """
from pathlib import Path
import tempfile
from mlinfra_nb.lake import Lake
from mlinfra_nb.lake.widgets import LakeBrowser
lake = Lake(Path(tempfile.mkdtemp())/'lake', user='ada'); repo = lake.create_repository('cards')
repo.put('main', 'docs/README.md', b'# cards'); repo.commit('main', 'readme')
repo.create_branch('dev', 'main'); repo.put('dev', 'docs/NOTES.md', b'notes'); repo.commit('dev', 'notes')
LakeBrowser(lake)
"""

def test_lake_browser_tabs_diff_branch_merge(lab, browser):
    open_notebook(lab, browser, 'lake', LAKE)
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, '.lm-TabBar-tab'))
    tabs = {t.text.strip(): t for t in browser.find_elements(By.CSS_SELECTOR, '.lm-TabBar-tab') if t.text.strip() in ('Log', 'Objects', 'Tables', 'Diff', 'Actions')}
    assert set(tabs) == {'Log', 'Objects', 'Tables', 'Diff', 'Actions'}
    assert 'readme' in text_of(browser, '.jp-OutputArea')
    tabs['Diff'].click(); time.sleep(0.5)
    Select([s for s in browser.find_elements(By.CSS_SELECTOR, '.widget-dropdown select') if s.is_displayed()][1]).select_by_value('dev')  # right side
    click_button(browser, 'Diff objects'); wait_text(browser, '1 added')
    tabs['Actions'].click(); time.sleep(0.5)
    merge = [e for e in browser.find_elements(By.CSS_SELECTOR, 'button.jupyter-button') if 'Merge' in e.text and e.is_displayed()][0]
    assert merge.text.strip() == 'Merge into this branch' and browser.execute_script('return arguments[0].scrollWidth <= arguments[0].clientWidth', merge)
    name = [e for e in browser.find_elements(By.CSS_SELECTOR, 'input[placeholder="name"]') if e.is_displayed()][0]
    name.send_keys('review'); click_button(browser, 'Create branch'); wait_text(browser, "created branch 'review'")
    Select(browser.find_elements(By.CSS_SELECTOR, '.widget-dropdown select')[1]).select_by_value('main'); time.sleep(1)
    tabs['Actions'].click(); time.sleep(0.5)
    src = [s for s in browser.find_elements(By.CSS_SELECTOR, '.widget-dropdown select') if s.is_displayed()]
    offered = [o.get_attribute('value') for o in Select(src[-2]).options]
    assert 'main' not in offered, offered
    click_button(browser, 'Merge into this branch'); wait_text(browser, 'Merge ')
    click_button(browser, 'Confirm'); wait_text(browser, "into 'main'")
    browser.save_screenshot(str(SHOTS/'lake_browser_after_merge.png'))
    assert 'merged' in text_of(browser, '.jp-OutputArea')
    assert_healthy(browser)

CANARY = """
import tempfile
from pathlib import Path
from mlinfra_nb.workspace import import_tensorflow
from mlinfra_nb.serve.config import model_config, server_config, write_configs
from mlinfra_nb.serve.server import ModelServer
from mlinfra_nb.serve.client import RestClient
from mlinfra_nb.serve.canary import CanaryRouter, Rollout, rollout_panel
keras = import_tensorflow().keras
home = Path(tempfile.mkdtemp())
for v in (1, 2, 3):
    x = keras.Input((), name='x')
    keras.Model({'x': x}, keras.layers.Lambda(lambda t, v=v: t * 0 + float(v))(x)).export(str(home/'m'/'fraud'/str(v)), verbose=False)
files = write_configs(home/'config', server_config(model_config('fraud', home/'m'/'fraud', [1], labels={'stable': 1})))
server = ModelServer(files['model_config_file'], rest_port=0, grpc_port=0, poll_seconds=0.2).start()
client = RestClient(server.rest_url)
rollout = Rollout(files['model_config_file'], 'fraud', client, grpc_target=server.grpc_target)
rollout_panel(rollout, CanaryRouter(client, 'fraud', 0.2))
"""

def test_canary_panel_start_promote_rollback(lab, browser):
    open_notebook(lab, browser, 'canary', CANARY)
    WebDriverWait(browser, 30).until(lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, 'button.jupyter-button') if e.text.strip() == 'Start canary'])
    version = browser.find_element(By.CSS_SELECTOR, '.widget-inline-hbox input[type="number"]')
    type_into(version, '7')
    t0 = time.monotonic(); click_button(browser, 'Start canary'); wait_text(browser, 'version 7 of fraud is not in', 10)
    assert time.monotonic() - t0 < 10
    type_into(version, '2')
    click_button(browser, 'Start canary'); wait_text(browser, 'canary: done')
    assert 'canary (v2) 20%' in text_of(browser, '.jp-OutputArea')
    click_button(browser, 'Promote'); wait_text(browser, 'promote: done')
    type_into(version, '3')
    click_button(browser, 'Start canary'); wait_text(browser, 'canary: done')
    click_button(browser, 'Roll back'); wait_text(browser, 'rollback: done')
    browser.save_screenshot(str(SHOTS/'canary_panel.png'))
    out = text_of(browser, '.jp-OutputArea')
    assert 'all to stable (v2)' in out, out
    assert_healthy(browser)

def test_exported_dashboard_opens_from_file_with_no_network(lab, browser, tmp_path):
    "The exported page carries its scripts: opened from file://, it draws (the test browser has no route out anyway: nothing is fetched)."
    sys.path.insert(0, str(ROOT))
    from mlinfra_nb.monitor.dashboard import Dashboard, histograms
    from mlinfra_nb.monitor.drift import data_drift
    import numpy as np, pandas as pd
    rng = np.random.default_rng(1)
    ref, cur = pd.DataFrame({'x': rng.normal(0, 1, 500)}), pd.DataFrame({'x': rng.normal(1, 1, 500)})
    page = Dashboard(data_drift(ref, cur, columns=['x']), histograms(ref, cur, ['x'])).save(tmp_path/'board.html')
    browser.get(page.as_uri())
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, '.mlinfra-chart canvas, .mlinfra-chart svg.marks'))
    browser.save_screenshot(str(SHOTS/'dashboard_export_file.png'))
    body = browser.find_element(By.TAG_NAME, 'body').text
    assert 'This chart needs JavaScript' not in body and 'could not be drawn' not in body, body
    assert not (errs := console_errors(browser)), errs
