#!/usr/bin/env python
"""Benchmark of the lakeFS-API server over the embedded lake (`mlinfra lake serve`), through the official `lakefs` SDK and
through its S3 gateway (boto3, pyarrow's S3FileSystem), against the embedded engine called directly.

    python bench/lakefs_bench.py            # full run (under a minute on 2 CPUs)
    python bench/lakefs_bench.py --quick    # fewer repetitions (same object sizes), about 20 s

What is measured, side by side in one run (each side in its own block, one after the other, so neither side's
background work -- the catalog is closed LINGER after the last operation -- lands in the other's timings):
1. upload throughput (MiB/s) of 1 MiB and 64 MiB objects: `branch.object(p).upload(data)` through the SDK vs
   `repo.put(branch, p, data)` on a `Lake` in this process. Every object is fresh random bytes (nothing deduplicates),
   made before the block is timed.
2. download throughput (MiB/s) of the same objects: `branch.object(p).reader().read()` vs `repo.get(branch, p)`.
   The S3 gateway of the same server is measured the same way, with boto3 (`put_object` / `get_object`, its default
   aws-chunked upload with a CRC32 trailer) and with pyarrow (`open_output_stream` -- a multipart upload past its part
   size -- / `open_input_file(...).read()`, one ranged GET; `open_input_stream` would read in 256 KiB ranges), each against
   the same direct figures.
3. commit latency of 100 staged changes (100 new 1 KiB objects, staged untimed): `branch.commit(msg)` vs `repo.commit`.

Throughput is the object size over the median time of one transfer; latency is the median of the commits.
The ratio is SDK / direct (or S3 client / direct): below 1 for throughput, or above 1 for latency, is the cost of HTTP + the client.
The server runs in its own process (`mlinfra lake serve` on 127.0.0.1, a free port), on its own lake directory;
the direct side uses a separate lake directory. The last line printed is one JSON object with every figure.
"""
from __future__ import annotations
import argparse, json, os, resource, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
from benchutil import lib_version, print_table, work_args

HERE = Path(__file__).resolve()
MiB = 1024 * 1024
REPO = 'bench'

FULL = dict(sizes_mib=[1, 64], reps={1: 20, 64: 5}, commit_changes=100, commit_size=1024, commit_reps=9, warmup=2)
QUICK = dict(sizes_mib=[1, 64], reps={1: 5, 64: 1}, commit_changes=100, commit_size=1024, commit_reps=3, warmup=1)

# --------------------------------------------------------------------------------------------------------------
# the server, in its own process

def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def wait_healthy(proc, port:int, log:Path, timeout:float=60):
    url, deadline = f'http://127.0.0.1:{port}/api/v1/healthcheck', time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the lake server exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 204: return
        except OSError: pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the lake server did not answer on port {port} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)

def start_server(root:Path, work:Path)->tuple[subprocess.Popen, int, Path]:
    port, log = free_port(), work/'server.log'
    cmd = [sys.executable, '-c', 'import sys; from mlinfra_nb.cli import main; sys.exit(main())',
           'lake', 'serve', '--root', str(root), '--port', str(port)]
    with open(log, 'wb') as f: proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try: wait_healthy(proc, port, log)
    except BaseException: stop_server(proc); raise
    return proc, port, log

def stop_server(proc:subprocess.Popen)->float|None:
    "Stop the server we started (by its pid); return its peak RSS in MiB (from `os.wait4`), if it could be reaped."
    if proc.poll() is not None: return None
    proc.terminate()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ru.ru_maxrss / 1024
        time.sleep(0.05)
    proc.kill()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_maxrss / 1024

# --------------------------------------------------------------------------------------------------------------
# the measurements

def timed(fn, *a, **kw):
    t0 = time.perf_counter(); r = fn(*a, **kw); return time.perf_counter() - t0, r

def settle():
    "Let both catalogs go idle (the lake keeps its catalog open for LINGER after an operation, then closes it in the background)."
    from mlinfra_nb.lake.store import LINGER
    time.sleep(max(0.2, 4 * LINGER))

def transfer_block(side:str, reps:int, mib:int, put, get)->tuple[list, list]:
    "Upload then read back `reps` objects of `mib` MiB with one side's `put(path, data)` / `get(path)`; the data is made beforehand."
    datas = [os.urandom(mib * MiB) for _ in range(reps)]
    up, down = [], []
    settle()
    for i, data in enumerate(datas):
        p = f'objects/{side}/{mib}mib/obj-{i:03d}.bin'
        t, _ = timed(put, p, data); up.append(t)
        t, got = timed(get, p); down.append(t)
        if got != data: raise AssertionError(f"{side}: read back {len(got)} bytes that differ from the {len(data)} uploaded at {p}")
        del got
    return up, down

def s3_sides(s3, arrow, branch:str='main')->dict:
    "put / get of the S3 gateway's clients: boto3 and pyarrow's S3FileSystem, on `branch` of the served repository."
    def arrow_put(p, d):
        with arrow.open_output_stream(f'{REPO}/{branch}/{p}') as f: f.write(d)
    def arrow_get(p):
        with arrow.open_input_file(f'{REPO}/{branch}/{p}') as f: return f.read()   # random access, as pyarrow's Parquet reader opens files
    return {'s3_boto3': (lambda p, d: s3.put_object(Bucket=REPO, Key=f'{branch}/{p}', Body=d),
                         lambda p: s3.get_object(Bucket=REPO, Key=f'{branch}/{p}')['Body'].read()),
            's3_pyarrow': (arrow_put, arrow_get)}

def bench_transfer(sz:dict, sdk_branch, direct_repo, mib:int, s3:dict, branch:str='main')->dict:
    "`reps` uploads and downloads of `mib` MiB objects on each side, fresh random data each (nothing deduplicates)."
    reps = sz['reps'][mib]
    sides = {'direct': (lambda p, d: direct_repo.put(branch, p, d), lambda p: direct_repo.get(branch, p)),
             'sdk': (lambda p, d: sdk_branch.object(p).upload(d, mode='wb'), lambda p: sdk_branch.object(p).reader(mode='rb').read()), **s3}
    for side, (put, get) in sides.items():  # untimed: connections, caches, first-call imports
        for i in range(sz['warmup']): put(f'warmup/{mib}mib-{i}.bin', os.urandom(64 * 1024)); get(f'warmup/{mib}mib-{i}.bin')
    up, down = {}, {}
    for side, (put, get) in sides.items(): up[side], down[side] = transfer_block(side, reps, mib, put, get)
    out = dict(mib=mib, reps=reps)
    for kind, d in (('upload', up), ('download', down)):
        for side in sides:
            out[f'{kind}_{side}_mibs'] = mib / statistics.median(d[side])
            out[f'{kind}_{side}_s'] = [round(x, 4) for x in d[side]]
        out[f'{kind}_ratio'] = out[f'{kind}_sdk_mibs'] / out[f'{kind}_direct_mibs']
        for side in s3: out[f'{kind}_{side}_ratio'] = out[f'{kind}_{side}_mibs'] / out[f'{kind}_direct_mibs']
    return out

def bench_commit(sz:dict, sdk_repo, direct_repo, branch:str='commits')->dict:
    "Commits of `commit_changes` new small objects each, staged just before (untimed; the SDK side stages through the SDK)."
    sdk_repo.branch(branch).create(source_reference='main')
    direct_repo.create_branch(branch, source='main')
    sb = sdk_repo.branch(branch)
    n, size = sz['commit_changes'], sz['commit_size']
    def sdk_round(items, msg):
        for p, d in items: sb.object(p).upload(d, mode='wb')
        t, ref = timed(sb.commit, msg)
        parent = ref.get_commit().parents[0]
        return t, len(list(sdk_repo.ref(parent).diff(ref.id, max_amount=n + 1, type='two_dot')))
    def direct_round(items, msg):
        direct_repo.put_many(branch, items)
        t, c = timed(direct_repo.commit, branch, msg)
        return t, len(direct_repo.diff(c.parents[0], c.id))
    times = {}
    for side, one_round in (('direct', direct_round), ('sdk', sdk_round)):
        times[side] = []
        settle()
        for r in range(sz['commit_reps']):
            items = [(f'changes/{side}-round-{r:02d}/obj-{i:04d}.bin', os.urandom(size)) for i in range(n)]
            t, changes = one_round(items, f'{n} changes, round {r}')
            if changes != n: raise AssertionError(f"{side}: commit {r} has {changes} changes, not {n}")
            times[side].append(t)
    med = lambda ts: statistics.median(ts) * 1000
    return dict(changes=n, reps=sz['commit_reps'], sdk_ms=med(times['sdk']), direct_ms=med(times['direct']),
                ratio=med(times['sdk']) / med(times['direct']),
                sdk_all_ms=[round(x * 1000, 2) for x in times['sdk']], direct_all_ms=[round(x * 1000, 2) for x in times['direct']])

# --------------------------------------------------------------------------------------------------------------
# the parent: set-up, table, JSON



def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='fewer repetitions (1 MiB x 5, 64 MiB x 1, 3 commits); the same object sizes')
    work_args(ap, keep='keep the temporary directory (and the server log)', child=False)
    args = ap.parse_args()

    import lakefs, boto3, botocore.config, pyarrow.fs as pafs
    from mlinfra_nb.lake import Lake
    from mlinfra_nb.lake.server import create_credentials

    sz = QUICK if args.quick else FULL
    version = lib_version()
    work = Path(tempfile.mkdtemp(prefix='lakefs_bench_', dir=args.tmpdir))
    t_start = time.perf_counter()
    proc, server_peak = None, None
    try:
        print(f"lakefs_bench ({'QUICK' if args.quick else 'full'}) in {work}", file=sys.stderr)
        served_root, direct_root = work/'served', work/'direct'
        setup = Lake(served_root, user='bench')
        cred = create_credentials(setup, 'bench')
        setup.store.close(); del setup
        proc, port, log = start_server(served_root, work)
        endpoint = f'http://127.0.0.1:{port}'
        print(f"  server pid {proc.pid} on {endpoint}", file=sys.stderr, flush=True)

        client = lakefs.Client(host=endpoint, username=cred.access_key_id, password=cred.secret_access_key)
        sdk_repo = lakefs.Repository(REPO, client=client).create(storage_namespace=f'local://{REPO}')
        sdk_main = sdk_repo.branch('main')
        direct = Lake(direct_root, user='bench')
        direct_repo = direct.create_repository(REPO)
        s3 = boto3.client('s3', endpoint_url=endpoint, aws_access_key_id=cred.access_key_id, aws_secret_access_key=cred.secret_access_key,
                          region_name='us-east-1', config=botocore.config.Config(s3={'addressing_style': 'path'}))
        arrow = pafs.S3FileSystem(endpoint_override=f'127.0.0.1:{port}', scheme='http', access_key=cred.access_key_id,
                                  secret_key=cred.secret_access_key, region='us-east-1')

        transfers = {}
        for mib in sz['sizes_mib']:
            print(f"  {mib} MiB objects x {sz['reps'][mib]} each way ...", file=sys.stderr, flush=True)
            transfers[mib] = bench_transfer(sz, sdk_main, direct_repo, mib, s3_sides(s3, arrow))
            sdk_main.commit(f'{mib} MiB objects'); direct_repo.commit('main', f'{mib} MiB objects')
        print(f"  commits of {sz['commit_changes']} changes x {sz['commit_reps']} ...", file=sys.stderr, flush=True)
        cm = bench_commit(sz, sdk_repo, direct_repo)
        direct.store.close()
    finally:
        if proc is not None: server_peak = stop_server(proc)
        if args.keep: print(f"kept {work}", file=sys.stderr)
        else: shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - t_start
    bench_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows = []
    for mib, t in transfers.items():
        for kind in ('upload', 'download'):
            rows.append((f"{kind} {mib} MiB objects (MiB/s, median of {t['reps']})", f"{t[f'{kind}_sdk_mibs']:.1f}",
                         f"{t[f'{kind}_direct_mibs']:.1f}", f"{t[f'{kind}_ratio']:.2f}  (higher is better)"))
    rows.append((f"commit {cm['changes']} changes (ms, median of {cm['reps']})", f"{cm['sdk_ms']:.1f}", f"{cm['direct_ms']:.1f}",
                 f"{cm['ratio']:.2f}  (lower is better)"))
    print()
    print(f"lakefs_bench: {'QUICK mode -- fewer repetitions' if args.quick else 'full run'}; total {wall:.0f} s; library {version}; "
          f"lakefs SDK {sdk_version()}; "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print_table(('benchmark', 'SDK (over HTTP)', 'direct', 'ratio SDK/direct'), rows)
    print("SDK: the official lakefs SDK against `mlinfra lake serve` in another process over 127.0.0.1; direct: the embedded "
          "Lake in this process. Throughput ratio < 1 and latency ratio > 1 are the cost of HTTP + the SDK.")
    s3_rows = [(f"{kind} {mib} MiB objects (MiB/s, median of {t['reps']})", f"{t[f'{kind}_s3_boto3_mibs']:.1f}", f"{t[f'{kind}_s3_pyarrow_mibs']:.1f}",
                f"{t[f'{kind}_direct_mibs']:.1f}", f"{t[f'{kind}_s3_boto3_ratio']:.2f}", f"{t[f'{kind}_s3_pyarrow_ratio']:.2f}")
               for mib, t in transfers.items() for kind in ('upload', 'download')]
    print()
    print_table(('S3 gateway', 'boto3', 'pyarrow', 'direct', 'ratio boto3/direct', 'ratio pyarrow/direct'), s3_rows)
    print("boto3 and pyarrow: the S3 gateway of the same server (path-style, SigV4). Ratios < 1 are the cost of HTTP + S3 + the client.")
    print(f"peak RSS: server process {server_peak:.0f} MiB, benchmark process (client + direct lake) {bench_peak:.0f} MiB"
          if server_peak is not None else f"peak RSS: benchmark process {bench_peak:.0f} MiB")

    r = lambda x, d=3: None if x is None else round(x, d)
    figures = dict(quick=args.quick, library=version, sizes=dict(sz, reps={str(k): v for k, v in sz['reps'].items()}),
                   cpus=os.cpu_count(), python=sys.version.split()[0])
    for mib, t in transfers.items():
        for kind in ('upload', 'download'):
            figures[f'{kind}_{mib}mib_sdk_mibs'] = r(t[f'{kind}_sdk_mibs'], 1)
            figures[f'{kind}_{mib}mib_direct_mibs'] = r(t[f'{kind}_direct_mibs'], 1)
            figures[f'{kind}_{mib}mib_ratio'] = r(t[f'{kind}_ratio'])
            figures[f'{kind}_{mib}mib_sdk_s'] = t[f'{kind}_sdk_s']
            figures[f'{kind}_{mib}mib_direct_s'] = t[f'{kind}_direct_s']
            for side in ('s3_boto3', 's3_pyarrow'):
                figures[f'{kind}_{mib}mib_{side}_mibs'] = r(t[f'{kind}_{side}_mibs'], 1)
                figures[f'{kind}_{mib}mib_{side}_ratio'] = r(t[f'{kind}_{side}_ratio'])
                figures[f'{kind}_{mib}mib_{side}_s'] = t[f'{kind}_{side}_s']
    figures.update(commit100_sdk_ms=r(cm['sdk_ms'], 2), commit100_direct_ms=r(cm['direct_ms'], 2), commit100_ratio=r(cm['ratio']),
                   commit100_sdk_all_ms=cm['sdk_all_ms'], commit100_direct_all_ms=cm['direct_all_ms'],
                   peak_mib_server=r(server_peak, 1), peak_mib_bench=r(bench_peak, 1), wall_s=r(wall, 1))
    print(json.dumps(figures))

def sdk_version()->str:
    from importlib.metadata import version, PackageNotFoundError
    try: return version('lakefs')
    except PackageNotFoundError: return 'unknown'

if __name__ == '__main__':
    main()
