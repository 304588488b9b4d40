"What every benchmark script prints the same way: the library version it measured, and its results table."
import argparse, json, os, resource, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def lib_version()->str:
    "The git commit of the library benchmarked, with '+dirty' when mlinfra_nb/ has uncommitted edits."
    try:
        git = lambda *a: subprocess.run(['git', *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return git('rev-parse', '--short', 'HEAD') + ('+dirty' if git('status', '--porcelain', '--', 'mlinfra_nb') else '')
    except Exception: return 'unknown'

def work_args(ap:argparse.ArgumentParser, keep:str='keep the temporary directory', child:bool=True):
    "Add the options of a benchmark that works in a temporary directory: --tmpdir, --keep, and the hidden --child/--work its child processes get."
    ap.add_argument('--tmpdir', help='where to make the temporary directory (default: the system temp dir)')
    ap.add_argument('--keep', action='store_true', help=keep)
    if child: ap.add_argument('--child', help=argparse.SUPPRESS); ap.add_argument('--work', help=argparse.SUPPRESS)

def print_table(head:tuple, rows:list):
    "Print `rows` under `head`, the first column left-aligned and the others right-aligned."
    w = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: '  '.join(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i]) for i, c in enumerate(r))
    print(line(head)); print('  '.join('-' * x for x in w))
    for r in rows: print(line(r))

def self_peak_mib()->float:
    "Peak RSS of this process, in MiB."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def run_measured(cmd:list, log:Path, **kw)->tuple[int, float, float, str]:
    "Run `cmd` (stderr to `log`); return (exit code, seconds, peak RSS in MiB of it and its waited-for descendants, stdout)."
    t0 = time.perf_counter()
    with open(log, 'ab') as err: p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, **kw)
    out = p.stdout.read(); p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, time.perf_counter() - t0, ru.ru_maxrss / 1024, out.decode(errors='replace')

def measured_child(name:str, cmd:list, log:Path, env:dict, tag:str)->dict:
    "Run a child that prints its result as a JSON line after `tag`; the result with its peak RSS and wall time, or dict(error=...)."
    rc, secs, peak, out = run_measured(cmd, log, env=env)
    line = next((l for l in reversed(out.splitlines()) if l.startswith(tag)), None)
    res = json.loads(line[len(tag):]) if line else {}
    if rc != 0 or line is None or 'error' in res:
        tail = log.read_text(errors='replace')[-2500:] if log.exists() else ''
        print(f"  {name} FAILED (exit code {rc}): {res.get('error', '')}\n{tail}", file=sys.stderr, flush=True)
        return dict(error=res.get('error') or f'exit code {rc}', peak_mib=peak, child_wall_s=secs)
    res['peak_mib'], res['child_wall_s'] = peak, secs
    return res

def probe(python:str, code:str, cwd:Path=ROOT)->tuple[bool, str]:
    "Run `code` with `python`: (it worked, the last line it printed or of its error)."
    try: p = subprocess.run([python, '-c', code], capture_output=True, text=True, timeout=300, cwd=cwd)
    except Exception as e: return False, f'{type(e).__name__}: {e}'
    lines = (p.stdout if p.returncode == 0 else p.stderr).strip().splitlines()
    return p.returncode == 0, lines[-1] if lines else ''

def verdict(ok)->str: return '-' if ok is None else 'PASS' if ok else 'FAIL'

# --------------------------------------------------------------------------------------------------------------
# Spark contenders: a 2-worker standalone cluster on 127.0.0.1, and the peak memory of a Spark application's JVMs

def vm_hwm_mib(pid:int)->float|None:
    "Peak resident memory (VmHWM) of a live process, in MiB."
    try: line = next(l for l in open(f'/proc/{pid}/status') if l.startswith('VmHWM:'))
    except (OSError, StopIteration): return None
    return int(line.split()[1]) / 1024

def executor_peaks(app_id:str)->list[float]:
    "VmHWM of the executor JVMs of Spark application `app_id` on this machine (standalone executors name it in their command line)."
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit(): continue
        try: cmd = open(f'/proc/{d}/cmdline', 'rb').read().split(b'\0')
        except OSError: continue
        if b'org.apache.spark.executor.CoarseGrainedExecutorBackend' in cmd and app_id.encode() in cmd:
            if (m := vm_hwm_mib(int(d))) is not None: out.append(m)
    return out

def spark_peaks(sc)->dict:
    "The live SparkContext `sc`'s driver JVM peak and its executors' peaks (MiB; none on local[N], where the driver JVM runs the tasks)."
    proc = getattr(sc._gateway, 'proc', None)
    return dict(driver_jvm_peak_mib=vm_hwm_mib(proc.pid) if proc else None, executor_peaks_mib=executor_peaks(sc.applicationId))

def standalone_cluster(workers:int=2, cores:int=1, memory:str='768m'):
    """The tests' Spark standalone cluster (tests/spark_cluster.py: a master and `workers` workers on 127.0.0.1, stopped by
    pid), with a worker timeout of 120 s instead of the tests' 10 s: a benchmark loads the machine. (None, why) without Java."""
    sys.path.insert(0, str(ROOT/'tests'))
    import spark_cluster
    if (why := spark_cluster.java_missing()): return None, why
    env = spark_cluster.spark_env
    spark_cluster.spark_env = lambda tmp: {**env(tmp), 'SPARK_MASTER_OPTS': '-Dspark.worker.timeout=120'}
    return spark_cluster.StandaloneCluster(workers=workers, cores=cores, memory=memory), None
