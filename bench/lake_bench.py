#!/usr/bin/env python
"""Benchmarks of the embedded lake (`mlinfra_nb.lake`) against its targets, and against DVC for bulk ingest.

    python bench/lake_bench.py            # full run (100,000-object repositories), plain and secured side by side; several minutes
    python bench/lake_bench.py --quick    # scaled-down sizes, a minute or two (figures are not comparable to the targets)
    python bench/lake_bench.py --variants plain,auth,encrypted,secured   # each of access control and encryption on its own too
    python bench/lake_bench.py --profile commit_new   # also print the top functions of one benchmark's timed part

Variants: `plain` is the lake as its owner opens it; `auth` runs the timed operations as a lake user in the Developers group, so every
operation is checked against that user's policies (`lake.as_user`); `encrypted` keeps every object encrypted (AES-256-GCM, `lake.key`);
`secured` is both. Every variant is measured against the same targets; DVC runs once.

What is measured (each benchmark runs in its own child process, so its peak RSS is its own):
1. branch creation in a repository of 100 vs 100,000 objects: median of ~30 creations; ratio and ms.
2. commit of 100 changed objects in a 1,000- vs 100,000-object repository, median over ~7 commits, with the 100
   changed paths 'clustered' (consecutive, one partition) or 'scattered' (random across the repository).
3. commit of 100,000 new 1 KiB files from disk: our lake (read, put_many in a few batches, commit) vs
   `dvc add` + `git add`/`git commit` of the .dvc file in a fresh git+dvc repository.
4. diff of two commits that differ in 1,000 of 100,000 objects.
5. peak RSS of every child (from `os.wait4`), and of the dvc/git processes.

Timings cover only the operation itself; building the repositories and writing the files is set-up.
Each size gets its own lake directory, so the catalog grows with the repository as it would in use.
The last line printed is one JSON object with every figure.
"""
from __future__ import annotations
import argparse, base64, json, os, random, resource, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
from benchutil import lib_version, print_table, work_args

HERE = Path(__file__).resolve()
RESULT_TAG = '@@LAKE_BENCH_RESULT@@ '
MiB = 1024 * 1024

# targets from the issue
T_BRANCH_RATIO, T_BRANCH_MS, T_COMMIT_RATIO, T_SPEEDUP, T_DIFF_S = 2.0, 30.0, 2.0, 10.0, 0.5

FULL = dict(branch_small=100, big=100_000, commit_small=1_000, changed=100, branch_reps=30, commit_reps=7,
            new_objects=100_000, new_size=1024, diff_changed=1_000, diff_reps=5, batch=25_000)
QUICK = dict(branch_small=100, big=2_000, commit_small=1_000, changed=100, branch_reps=10, commit_reps=3,
             new_objects=2_000, new_size=1024, diff_changed=20, diff_reps=3, batch=1_000)

# --------------------------------------------------------------------------------------------------------------
# helpers used in the children

_profiler = None

class timed:
    "Time a block (perf_counter); with --profile the outermost profiled block runs under cProfile."
    depth = 0
    def __init__(self, profile:bool=True): self.profile = profile and _profiler is not None
    def __enter__(self):
        if self.profile:
            if timed.depth == 0: _profiler.enable()
            timed.depth += 1
        self.t0 = time.perf_counter(); return self
    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
        if self.profile:
            timed.depth -= 1
            if timed.depth == 0: _profiler.disable()

def self_peak_mib()->float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def obj_path(i:int, per_part:int=1000)->str: return f"data/part={i // per_part:04d}/obj-{i:07d}.bin"

VARIANTS = {'plain': (False, False), 'auth': (True, False), 'encrypted': (False, True), 'secured': (True, True)}  # (access control, encryption)
_variant = {'name': 'plain', 'key': None}   # set in each child process from its arguments

def open_lake(root:Path):
    "The lake at `root` as this run's variant has it: (its owner's lake, the lake the timed operations use)."
    from mlinfra_nb.lake.core import Lake
    checked, encrypted = VARIANTS[_variant['name']]
    owner = Lake(root, user='bench', key=_variant['key'] if encrypted else None)
    if not checked: return owner, owner
    from mlinfra_nb.lake import auth
    if 'bench-dev' not in auth.list_users(owner): auth.create_user(owner, 'bench-dev', groups=['Developers'])
    return owner, owner.as_user('bench-dev')

def build_repo(root:Path, n:int, seed:int=0, batch:int=50_000):
    "A lake at `root` with repository 'bench' whose main branch holds `n` small committed objects (returns the lake the timed operations use)."
    rnd = random.Random(seed)
    owner, lake = open_lake(root)
    owner.create_repository('bench')
    repo = lake.repository('bench')
    paths = [obj_path(i) for i in range(n)]
    for s in range(0, n, batch):
        repo.put_many('main', {p: f"{p}:{rnd.getrandbits(64):016x}".encode() for p in paths[s:s + batch]})
    repo.commit('main', f'{n} objects')
    return lake, repo, paths

def changed_items(paths:list, rnd:random.Random, tag:str)->dict:
    return {p: f"{p}:{tag}:{rnd.getrandbits(64):016x}".encode() for p in paths}

def reopen(lake):
    "Close `lake` and open its directory afresh, with empty caches, as a new process would (returns lake, repo)."
    from mlinfra_nb.lake import core
    lake.store.close()
    for name in ('_metaranges', '_ranges', '_maxes', '_commits'):  # module-level caches, in versions that have them
        c = getattr(core, name, None)
        if hasattr(c, 'clear'): c.clear()
    _, fresh = open_lake(lake.root)
    return fresh, fresh.repository('bench')

def med_ms(xs:list)->float: return statistics.median(xs) * 1000

# --------------------------------------------------------------------------------------------------------------
# the benchmarks (each runs in a child process)

def child_branch(a:dict, work:Path, n:int)->dict:
    from mlinfra_nb.lake.store import LINGER
    lake, repo, _ = build_repo(work/f'branch-{n}', n)
    setup_peak = self_peak_mib()
    hot = []
    for i in range(a['branch_reps']):
        with timed() as t: repo.create_branch(f'hot{i}', source='main')
        hot.append(t.s)
    lake.store.close()
    cold = []  # the catalog re-opened for every creation, as for a one-off call from a CLI
    for i in range(a['branch_reps']):
        time.sleep(LINGER * 2 + 0.05)
        lake.store.close()
        with timed() as t: repo.create_branch(f'cold{i}', source='main')
        cold.append(t.s)
    lake.store.close()
    return dict(n=n, median_ms=med_ms(hot), p90_ms=sorted(hot)[int(0.9 * (len(hot) - 1))] * 1000,
                cold_median_ms=med_ms(cold), setup_peak_mib=setup_peak)

def child_commit(a:dict, work:Path, n:int)->dict:
    lake, repo, paths = build_repo(work/f'commit-{n}', n)
    setup_peak = self_peak_mib()
    rnd, k, out = random.Random(1), a['changed'], {}
    def run(variant, pick, cold=False):
        nonlocal lake, repo
        times, stage = [], []
        for r in range(a['commit_reps']):
            chosen = pick()
            with timed(profile=False) as t: repo.put_many('main', changed_items(chosen, rnd, f'{variant}{r}'))
            stage.append(t.s)
            if cold: lake, repo = reopen(lake)
            with timed() as t: repo.commit('main', f'{variant} {r}')
            times.append(t.s)
        out[f'{variant}_ms'] = med_ms(times); out[f'{variant}_put_ms'] = med_ms(stage)
        out[f'{variant}_all_ms'] = [round(x * 1000, 2) for x in times]
    def clustered():
        s = rnd.randrange(0, max(1, n - k)); return paths[s:s + k]
    run('clustered', clustered)
    run('scattered', lambda: rnd.sample(paths, k))
    run('scattered_cold', lambda: rnd.sample(paths, k), cold=True)
    lake.store.close()
    return dict(n=n, setup_peak_mib=setup_peak, **out)

def child_diff(a:dict, work:Path, n:int)->dict:
    lake, repo, paths = build_repo(work/f'diff-{n}', n)
    rnd, k, out = random.Random(2), a['diff_changed'], {}
    base = repo.head('main')
    for variant, chosen in (('scattered', sorted(rnd.sample(paths, k))), ('clustered', paths[n // 2:n // 2 + k])):
        repo.hard_reset('main', base.id)
        repo.put_many('main', changed_items(chosen, rnd, variant))
        new = repo.commit('main', f'{k} changed ({variant})')
        setup_peak = self_peak_mib()
        times = []
        for i in range(a['diff_reps']):
            with timed() as t: changes = repo.diff(base.id, new.id)
            times.append(t.s)
            assert len(changes) == k, (len(changes), k)
        lake, repo = reopen(lake)
        with timed() as t: repo.diff(base.id, new.id)
        out[variant] = dict(median_s=statistics.median(times), first_s=times[0], cold_s=t.s)
    lake.store.close()
    return dict(n=n, k=k, setup_peak_mib=setup_peak, **out)

def child_commit_new(a:dict, work:Path, src:str)->dict:
    "Our side of the DVC comparison: `import_directory` (walk, read, hash, stage) then commit, like `dvc add` + `git commit`."
    owner, lake = open_lake(work/'ingest')
    owner.create_repository('bench')
    repo = lake.repository('bench')
    lake.store.close()
    with timed() as total:
        with timed() as ti: n = repo.import_directory('main', src, batch=a['batch'])
        with timed() as tc: c = repo.commit('main', f'import {n} files')
    lake.store.close()
    return dict(files=n, total_s=total.s, import_s=ti.s, commit_s=tc.s, commit=c.id[:12])

CHILDREN = {'branch': child_branch, 'commit': child_commit, 'diff': child_diff, 'commit_new': child_commit_new}

def child_main(args):
    global _profiler
    if args.profile_child:
        import cProfile; _profiler = cProfile.Profile()
    a = json.loads(args.child_args)
    _variant.update(name=a['variant'], key=a['key'])
    res = CHILDREN[args.child](a['sizes'], Path(a['work']), a['arg'])
    res['self_peak_mib'] = self_peak_mib()
    if _profiler:
        import io, pstats
        for key in ('cumulative', 'tottime'):
            s = io.StringIO(); pstats.Stats(_profiler, stream=s).sort_stats(key).print_stats(18)
            print(f"--- profile of the timed part of {args.child}({a['arg']}), by {key} ---", file=sys.stderr)
            print('\n'.join(l for l in s.getvalue().splitlines() if l.strip())[:6000], file=sys.stderr)
    print(RESULT_TAG + json.dumps(res), flush=True)

# --------------------------------------------------------------------------------------------------------------
# the parent: children, DVC, table, JSON

def run_measured(cmd:list, **kw)->tuple[int, float, float, str]:
    "Run `cmd`; return (exit code, seconds, peak RSS in MiB of it and its waited-for descendants, stdout)."
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, **kw)
    out = p.stdout.read(); p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, secs, ru.ru_maxrss / 1024, out.decode(errors='replace')

def run_child(name:str, sizes:dict, work:Path, arg, profile:bool=False, variant:str='plain', key:str|None=None)->dict:
    cmd = [sys.executable, str(HERE), '--child', name, '--child-args',
           json.dumps(dict(sizes=sizes, work=str(work), arg=arg, variant=variant, key=key))]
    if profile: cmd.append('--profile-child')
    print(f"  running {name}({arg}) [{variant}] ...", file=sys.stderr, flush=True)
    rc, secs, peak, out = run_measured(cmd)
    line = next((l for l in reversed(out.splitlines()) if l.startswith(RESULT_TAG)), None)
    if rc != 0 or line is None: raise RuntimeError(f"benchmark child {name}({arg}) failed with exit code {rc}")
    res = json.loads(line[len(RESULT_TAG):])
    res['peak_mib'], res['child_wall_s'] = peak, secs
    return res

def write_files(d:Path, n:int, size:int, per_dir:int=1000):
    rnd = random.Random(3)
    for i in range(n):
        sub = d/f'part-{i // per_dir:04d}'
        if i % per_dir == 0: sub.mkdir(parents=True, exist_ok=True)
        (sub/f'file-{i:07d}.bin').write_bytes(rnd.randbytes(size))

def find_dvc()->str|None:
    import importlib.util
    if importlib.util.find_spec('dvc') is None: return None
    exe = Path(sys.executable).parent/'dvc'
    return str(exe) if exe.exists() else shutil.which('dvc')

def bench_dvc(dvc:str, work:Path, src:Path)->dict:
    "dvc add of a copy of `src`, then git add + commit of the .dvc file, in a fresh git+dvc repository."
    repo = work/'dvc-repo'; repo.mkdir()
    env = dict(os.environ, DVC_NO_ANALYTICS='1', DVC_NO_UPDATER='1', GIT_AUTHOR_NAME='bench', GIT_AUTHOR_EMAIL='bench@localhost',
               GIT_COMMITTER_NAME='bench', GIT_COMMITTER_EMAIL='bench@localhost', GIT_CONFIG_NOSYSTEM='1')
    log = open(work/'dvc.log', 'w')
    def run(*cmd):
        rc, secs, peak, _ = run_measured(list(cmd), cwd=repo, env=env, stderr=log)
        if rc != 0: raise RuntimeError(f"{' '.join(cmd)} failed with exit code {rc}; see the log above")
        return secs, peak
    for cmd in (['git', 'init', '-q'], [dvc, 'init', '-q'], [dvc, 'config', 'core.analytics', 'false'],
                [dvc, 'config', 'core.check_update', 'false'], ['git', 'add', '.dvc', '.dvcignore'],
                ['git', 'commit', '-q', '-m', 'dvc init']):
        run(*cmd)
    os.rename(src, repo/'data')  # the same files, moved (not copied) into the repository
    try:
        t_add, p_add = run(dvc, 'add', '-q', 'data')
        t_gadd, p_gadd = run('git', 'add', 'data.dvc', '.gitignore')
        t_gcommit, p_gcommit = run('git', 'commit', '-q', '-m', 'add data')
    except RuntimeError:
        log.close(); sys.stderr.write((work/'dvc.log').read_text()[-3000:]); raise
    finally:
        os.rename(repo/'data', src)
    log.close()
    return dict(dvc_add_s=t_add, git_s=t_gadd + t_gcommit, total_s=t_add + t_gadd + t_gcommit,
                peak_mib=max(p_add, p_gadd, p_gcommit), dvc_add_peak_mib=p_add)


def fmt_n(n:int)->str: return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)

def verdict(ok)->str: return '-' if ok is None else 'PASS' if ok else 'FAIL'


def measure(sz:dict, work:Path, variant:str, key:str|None, profile:str|None)->dict:
    "Every benchmark child for one variant, in a folder of its own."
    work = work/variant; work.mkdir()
    prof = lambda name: profile == name
    big, src = sz['big'], work.parent/'files'
    subprocess.run(['sync'], check=False)   # each variant's import starts with nothing left to write back
    new = run_child('commit_new', sz, work, str(src), prof('commit_new'), variant=variant, key=key)
    return dict(new=new, br_s=run_child('branch', sz, work, sz['branch_small'], variant=variant, key=key),
                br_b=run_child('branch', sz, work, big, prof('branch'), variant=variant, key=key),
                cm_s=run_child('commit', sz, work, sz['commit_small'], variant=variant, key=key),
                cm_b=run_child('commit', sz, work, big, prof('commit'), variant=variant, key=key),
                df=run_child('diff', sz, work, big, prof('diff'), variant=variant, key=key))

def report(sz:dict, m:dict, dv:dict|None)->tuple[list, dict, dict]:
    "The detail rows, the figures, and the target verdicts of one variant's measurements `m`."
    br_s, br_b, cm_s, cm_b, df, new = (m[k] for k in ('br_s', 'br_b', 'cm_s', 'cm_b', 'df', 'new'))
    ratio = lambda a, b: a / b if b else float('inf')
    branch_ratio = ratio(br_b['median_ms'], br_s['median_ms'])
    cr = {v: ratio(cm_b[f'{v}_ms'], cm_s[f'{v}_ms']) for v in ('clustered', 'scattered', 'scattered_cold')}
    speedup = ratio(dv['total_s'], new['total_s']) if dv else None
    ok = dict(branch_ms=br_b['median_ms'] <= T_BRANCH_MS, branch_ratio=branch_ratio <= T_BRANCH_RATIO,
              commit_clustered=cr['clustered'] <= T_COMMIT_RATIO, commit_scattered=cr['scattered'] <= T_COMMIT_RATIO,
              speedup=speedup >= T_SPEEDUP if dv else None, diff=df['scattered']['median_s'] <= T_DIFF_S,
              diff_clustered=df['clustered']['median_s'] <= T_DIFF_S)
    ns, nb, nc = fmt_n(sz['branch_small']), fmt_n(sz['big']), fmt_n(sz['commit_small'])
    rows = [
        (f'branch create @{ns} objs (median ms)', f"{br_s['median_ms']:.2f}", '', '', f"{br_s['peak_mib']:.0f}", ''),
        (f'branch create @{nb} objs (median ms)', f"{br_b['median_ms']:.2f}", f'<= {T_BRANCH_MS:.0f} ms', '',
         f"{br_b['peak_mib']:.0f}", verdict(ok['branch_ms'])),
        (f'branch create ratio {nb}/{ns}', f'{branch_ratio:.2f}', f'<= {T_BRANCH_RATIO:.0f}', f'{branch_ratio:.2f}', '', verdict(ok['branch_ratio'])),
        (f'  (catalog re-opened per call) {ns} / {nb}', f"{br_s['cold_median_ms']:.2f} / {br_b['cold_median_ms']:.2f}", '',
         f"{ratio(br_b['cold_median_ms'], br_s['cold_median_ms']):.2f}", '', ''),
    ]
    for v, label in (('clustered', 'clustered'), ('scattered', 'scattered'), ('scattered_cold', 'scattered, cold cache')):
        rows += [(f"commit {sz['changed']} changed ({label}) @{nc} / @{nb} ms",
                  f"{cm_s[f'{v}_ms']:.1f} / {cm_b[f'{v}_ms']:.1f}", f'ratio <= {T_COMMIT_RATIO:.0f}', f'{cr[v]:.2f}',
                  f"{cm_s['peak_mib']:.0f} / {cm_b['peak_mib']:.0f}" if v == 'clustered' else '',
                  verdict(cr[v] <= T_COMMIT_RATIO) if v != 'scattered_cold' else '(info)')]
    rows += [
        (f"commit {sz['new_objects']:,} new {sz['new_size']} B files (s)", f"{new['total_s']:.2f}",
         f"dvc {dv['total_s']:.2f}" if dv else 'dvc n/a', f'{speedup:.2f}x' if dv else '',
         f"{new['peak_mib']:.0f}" + (f" / dvc {dv['peak_mib']:.0f}" if dv else ''), verdict(ok['speedup'])),
        (f"  of which import_directory / commit (s)", f"{new['import_s']:.2f} / {new['commit_s']:.2f}",
         f"dvc add {dv['dvc_add_s']:.2f}, git {dv['git_s']:.2f}" if dv else '', f'target >= {T_SPEEDUP:.0f}x', '', ''),
        (f"diff {sz['diff_changed']:,} of {nb} (scattered, s)", f"{df['scattered']['median_s']:.3f}", f'<= {T_DIFF_S} s', '',
         f"{df['peak_mib']:.0f}", verdict(ok['diff'])),
        (f"diff {sz['diff_changed']:,} of {nb} (clustered, s)", f"{df['clustered']['median_s']:.3f}", f'<= {T_DIFF_S} s', '', '',
         verdict(ok['diff_clustered'])),
        (f"  diff first call / cold cache (scattered, s)", f"{df['scattered']['first_s']:.3f} / {df['scattered']['cold_s']:.3f}", '', '', '', ''),
    ]
    r = lambda x, d=3: None if x is None else round(x, d)
    figures = dict(
        branch_create_ratio=r(branch_ratio), branch_create_median_ms_small=r(br_s['median_ms']),
        branch_create_median_ms_100k=r(br_b['median_ms']),
        branch_create_cold_median_ms_small=r(br_s['cold_median_ms']), branch_create_cold_median_ms_100k=r(br_b['cold_median_ms']),
        commit100_ratio=r(cr['clustered']), commit100_ms_1k=r(cm_s['clustered_ms']), commit100_ms_100k=r(cm_b['clustered_ms']),
        commit100_scattered_ratio=r(cr['scattered']), commit100_scattered_ms_1k=r(cm_s['scattered_ms']),
        commit100_scattered_ms_100k=r(cm_b['scattered_ms']),
        commit100_scattered_cold_ratio=r(cr['scattered_cold']), commit100_scattered_cold_ms_1k=r(cm_s['scattered_cold_ms']),
        commit100_scattered_cold_ms_100k=r(cm_b['scattered_cold_ms']),
        put100_ms_1k=r(cm_s['scattered_put_ms']), put100_ms_100k=r(cm_b['scattered_put_ms']),
        commit_100k_new_s=r(new['total_s']), commit_100k_new_import_s=r(new['import_s']), commit_100k_new_commit_s=r(new['commit_s']),
        speedup_vs_dvc=r(speedup, 2),
        diff_1000_of_100k_s=r(df['scattered']['median_s'], 4), diff_1000_of_100k_clustered_s=r(df['clustered']['median_s'], 4),
        diff_1000_of_100k_cold_s=r(df['scattered']['cold_s'], 4),
        peak_mib_branch_small=r(br_s['peak_mib'], 1), peak_mib_branch_100k=r(br_b['peak_mib'], 1),
        peak_mib_commit100_1k=r(cm_s['peak_mib'], 1), peak_mib_commit100_100k=r(cm_b['peak_mib'], 1),
        peak_mib_commit_100k_new=r(new['peak_mib'], 1), peak_mib_diff_100k=r(df['peak_mib'], 1))
    return rows, figures, ok

SUMMARY = [('branch create @big (median ms)', 'branch_create_median_ms_100k', 'branch_ms', f'<= {T_BRANCH_MS:.0f} ms'),
           ('branch create ratio big/small', 'branch_create_ratio', 'branch_ratio', f'<= {T_BRANCH_RATIO:.0f}'),
           ('commit 100 clustered, ratio big/small', 'commit100_ratio', 'commit_clustered', f'<= {T_COMMIT_RATIO:.0f}'),
           ('commit 100 scattered, ratio big/small', 'commit100_scattered_ratio', 'commit_scattered', f'<= {T_COMMIT_RATIO:.0f}'),
           ('commit new files (s)', 'commit_100k_new_s', None, ''),
           ('  speedup vs dvc', 'speedup_vs_dvc', 'speedup', f'>= {T_SPEEDUP:.0f}x'),
           ('diff 1000 scattered (s)', 'diff_1000_of_100k_s', 'diff', f'<= {T_DIFF_S} s'),
           ('diff 1000 clustered (s)', 'diff_1000_of_100k_clustered_s', 'diff_clustered', f'<= {T_DIFF_S} s')]

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='small sizes (2,000 objects); not comparable to the targets')
    ap.add_argument('--no-dvc', action='store_true', help='skip the DVC comparison')
    ap.add_argument('--variants', default='plain,secured', help=f"comma-separated, among {', '.join(VARIANTS)} (default plain,secured)")
    work_args(ap, child=False)
    ap.add_argument('--profile', choices=['branch', 'commit', 'diff', 'commit_new'],
                    help="print cProfile's top functions of this benchmark's timed part (largest size)")
    ap.add_argument('--child', help=argparse.SUPPRESS)
    ap.add_argument('--child-args', help=argparse.SUPPRESS)
    ap.add_argument('--profile-child', action='store_true', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child: return child_main(args)
    variants = [v.strip() for v in args.variants.split(',') if v.strip()]
    if not variants or (bad := [v for v in variants if v not in VARIANTS]): ap.error(f"unknown variants {bad}; choose among {', '.join(VARIANTS)}")

    sz = QUICK if args.quick else FULL
    version = lib_version()
    dvc = None if args.no_dvc else find_dvc()
    dvc_note = ('skipped (--no-dvc)' if args.no_dvc else
                None if dvc else "DVC is NOT installed: the DVC comparison is skipped. Install the bench extra "
                                 "(pip install -e '.[bench]', i.e. 'dvc>=3' psutil) to compare.")
    if dvc_note: print(f"NOTE: {dvc_note}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix='lake_bench_', dir=args.tmpdir))
    key = base64.b64encode(os.urandom(32)).decode()   # the encrypted variants' lake key, for this run only
    t_start, measured, dv = time.perf_counter(), {}, None
    try:
        print(f"lake_bench ({'QUICK' if args.quick else 'full'}) in {work}", file=sys.stderr)
        print(f"  writing {sz['new_objects']:,} files of {sz['new_size']} B ...", file=sys.stderr, flush=True)
        write_files(work/'files', sz['new_objects'], sz['new_size'])
        for v in variants: measured[v] = measure(sz, work, v, key, args.profile)
        if dvc:
            print("  running dvc add + git commit ...", file=sys.stderr, flush=True)
            try: dv = bench_dvc(dvc, work, work/'files')
            except Exception as e: dvc_note = f"DVC run failed: {e}"; print(f"NOTE: {dvc_note}", file=sys.stderr)
    finally:
        if args.keep: print(f"kept {work}", file=sys.stderr)
        else: shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - t_start
    reports = {v: report(sz, m, dv) for v, m in measured.items()}

    print()
    print(f"lake_bench: {'QUICK mode -- sizes scaled down, PASS/FAIL is indicative only' if args.quick else 'full run'}; "
          f"total {wall:.0f} s; library {version}; python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"\nside by side ({fmt_n(sz['big'])} objects; auth = every operation checked as a Developer, encrypted = AES-256-GCM at rest):")
    print_table(('benchmark', *variants, 'target', *[f'{v} vs target' for v in variants]),
                [(label, *[reports[v][1][fig] for v in variants], target, *[verdict(reports[v][2][k]) if k else '' for v in variants])
                 for label, fig, k, target in SUMMARY])
    for v in variants:
        print(f"\n{v}:")
        print_table(('benchmark', 'ours', 'peer / target', 'ratio', 'peak MiB', 'vs target'), reports[v][0])
    print("peak MiB: peak RSS of the benchmark's child process (including building its repository); "
          "for dvc, of the largest dvc/git process.")
    if dvc_note: print(f"NOTE: {dvc_note}")

    r = lambda x, d=3: None if x is None else round(x, d)
    figures = dict(quick=args.quick, library=version, sizes=sz, **reports[variants[0]][1], first_variant=variants[0],
                   variants={v: reports[v][1] for v in variants},
                   dvc_add_commit_100k_s=r(dv['total_s']) if dv else None, dvc_add_100k_s=r(dv['dvc_add_s']) if dv else None,
                   dvc_available=dv is not None, dvc_note=dvc_note, peak_mib_dvc=r(dv['peak_mib'], 1) if dv else None,
                   targets=dict(branch_create_ratio=T_BRANCH_RATIO, branch_create_median_ms_100k=T_BRANCH_MS, commit100_ratio=T_COMMIT_RATIO,
                                speedup_vs_dvc=T_SPEEDUP, diff_1000_of_100k_s=T_DIFF_S),
                   wall_s=r(wall, 1))
    if args.profile: print(f"NOTE: {args.profile} ran under cProfile: its figures are inflated (profile on stderr)")
    print(json.dumps(figures))

if __name__ == '__main__':
    main()
