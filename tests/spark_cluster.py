"""A Spark standalone cluster for the tests: one master and two workers on 127.0.0.1, started from the pip-installed
PySpark with the machine's Java, on free ports, and stopped by pid. Without Java the Spark tests skip with a notice."""
import json, os, re, shutil, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
import pytest

def java_missing()->str|None:
    "Why Spark cannot run here (None: it can)."
    java = shutil.which('java', path=os.path.join(os.environ.get('JAVA_HOME', ''), 'bin') + os.pathsep + os.environ.get('PATH', ''))
    if not java: return "no Java on this machine (install a JDK 17 or 21 to run the Spark engine's tests)"
    try: import pyspark  # noqa: F401
    except ImportError: return "PySpark is not installed (pip install pyspark, or the package's dev requirements)"
    return None

def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def spark_env(tmp:Path)->dict:
    import pyspark
    return {**os.environ, 'SPARK_HOME': str(Path(pyspark.__file__).parent), 'SPARK_LOCAL_IP': '127.0.0.1', 'SPARK_LOG_DIR': str(tmp/'logs'),
            'SPARK_WORKER_DIR': str(tmp/'work'), 'SPARK_NO_DAEMONIZE': '1', 'PYSPARK_PYTHON': sys.executable,
            'SPARK_MASTER_OPTS': '-Dspark.worker.timeout=10'}   # a lost worker is dropped after 10 s, not 60

class StandaloneCluster:
    "A Spark standalone master and `workers` workers on 127.0.0.1 (each `cores` cores, `memory` of executor memory)."
    def __init__(self, workers:int=2, cores:int=1, memory:str='768m'):
        self.n, self.cores, self.memory, self.procs = workers, cores, memory, []
        self.tmp = Path(tempfile.mkdtemp(prefix='mlinfra-spark-'))

    def _start(self, cls:str, *args:str, name:str)->subprocess.Popen:
        import pyspark
        cmd = [str(Path(pyspark.__file__).parent/'bin'/'spark-class'), f'org.apache.spark.deploy.{cls}', *args]
        log = open(self.tmp/f'{name}.log', 'wb')
        p = subprocess.Popen(cmd, env=spark_env(self.tmp), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def alive_workers(self)->int:
        "The workers the master has registered; -1 until its web UI is up."
        # the port the UI bound, from the master's log: the free port picked for it may have been taken meanwhile (another
        # test process's Spark UI, say, answering HTML), and Spark then binds the next one
        bound = re.findall(r"started service 'MasterUI' on port (\d+)", (self.tmp/'master.log').read_text(errors='replace'))
        if not bound: return -1
        self.ui_port = int(bound[-1])
        with urllib.request.urlopen(f'http://127.0.0.1:{self.ui_port}/json/', timeout=5) as r: return json.load(r)['aliveworkers']

    def start(self, timeout:float=180)->'StandaloneCluster':
        port, self.ui_port = free_port(), free_port()
        self.url = f'spark://127.0.0.1:{port}'
        self._start('master.Master', '--host', '127.0.0.1', '--port', str(port), '--webui-port', str(self.ui_port), name='master')
        for i in range(self.n): self.add_worker(i)
        self.wait_for(self.n, timeout)
        return self

    def add_worker(self, i:int)->subprocess.Popen:
        "Start worker `i` (a new one after a lost one takes its place)."
        return self._start('worker.Worker', '--host', '127.0.0.1', '--port', str(free_port()), '--webui-port', str(free_port()),
                           '--cores', str(self.cores), '--memory', self.memory, '--work-dir', str(self.tmp/f'work{i}'), self.url, name=f'worker{i}')

    def wait_for(self, workers:int, timeout:float=180):
        "Wait until `workers` workers are registered with the master."
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.procs[0].poll() is not None: break
            try:
                if self.alive_workers() == workers: return
            except OSError: pass
            time.sleep(0.5)
        logs = '\n'.join((self.tmp/f).read_text(errors='replace')[-1500:] for f in os.listdir(self.tmp) if f.endswith('.log'))
        self.stop()
        raise RuntimeError(f"the Spark cluster did not come up with {workers} workers in {timeout}s:\n{logs}")

    def stop(self):
        "Stop every process this cluster started, by pid (and its process group: spark-class execs the JVM)."
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, 15)
                try: p.wait(20)
                except subprocess.TimeoutExpired: os.killpg(p.pid, 9); p.wait()
        self.procs = []
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self): return self.start()
    def __exit__(self, *a): self.stop()

@pytest.fixture(scope='session')
def spark_cluster():
    "A running 2-worker standalone cluster, shared by the session's tests."
    if (why := java_missing()): pytest.skip(f"Spark tests skipped: {why}")
    with StandaloneCluster() as c: yield c

SPARK_TEST_CONF = {'spark.sql.shuffle.partitions': '4', 'spark.default.parallelism': '2', 'spark.ui.enabled': 'false',
        'spark.executor.memory': '512m', 'spark.cores.max': '2', 'spark.executor.cores': '1'}

@pytest.fixture(scope='session', params=['local[2]', 'cluster'])
def spark(request, tmp_path_factory):
    "A session on local[2], then one on the 2-worker cluster (one at a time: a process has one SparkContext)."
    if (why := java_missing()): pytest.skip(f"Spark tests skipped: {why}")
    from mlinfra_nb.features.spark import spark_session
    from mlinfra_nb.workspace import Workspace
    master = request.getfixturevalue('spark_cluster').url if request.param == 'cluster' else 'local[2]'
    s = spark_session(Workspace(tmp_path_factory.mktemp('ws'), env={}), master=master, conf=SPARK_TEST_CONF)
    s.sparkContext.setLogLevel('FATAL')   # the tests fail jobs on purpose; their stack traces are noise
    if request.param == 'cluster': assert s.sparkContext.master == master
    yield s
    s.stop()
