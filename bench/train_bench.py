#!/usr/bin/env python
"""Benchmark of the training input (`mlinfra_nb.train.lake_dataset`): rows/s and peak memory against the naive route
(`pandas.read_parquet` -> `tf.data.Dataset.from_tensor_slices`), and whether a small model's training is input-bound.

    python bench/train_bench.py            # full run: a 5,000,000-row, 20-column lake table (a few minutes)
    python bench/train_bench.py --quick    # 300,000 rows, about a minute (figures are not comparable to the targets)

The table: seeded random data with 20 columns -- f0..f9 float32, f10..f14 float64, i0 int32, i1 int64, c0 (4 values)
and c1 (40 values) strings, and `label` int8 (0/1, about 10% ones) -- written in appended 500,000-row parts to an
embedded lake in a temporary directory. The 19 columns other than `label` are the features.

Contenders, each in a child process of its own (its peak RSS is its own):
1. ours  -- `lake_dataset((repo, 'main', 'tables/x'), features, 'label', batch_size=256, seed=0)`, one epoch.
2. naive -- `pandas.read_parquet(<the table's Parquet parts>)`, then `tf.data.Dataset.from_tensor_slices((dict(df[features]),
            df['label'])).shuffle(65536, seed=0).batch(256).prefetch(AUTOTUNE)`, one epoch.
Input is consumed the way a trainer does and the way a Python loop does:
- graph:  one epoch inside one `tf.function` (`Dataset.reduce`), as `model.fit` consumes its input: the figure judged.
          Rows/s = rows / wall seconds with the set-up included: the naive route's `read_parquet` and
          `from_tensor_slices`, ours' schema, row count and NULL/NaN check (one scan of the table; ours reads it again
          in the epoch).
- python: `for x, y in ds` over the first 1,000 batches of an epoch, set-up not counted (info): an eager loop pays the
          same per-batch Python overhead on both routes, and the naive route would take minutes for a whole epoch.
For the record, the naive route is also timed without its `.shuffle` (graph, set-up included).
Memory: the RSS after the imports and TensorFlow's start-up (the baseline, the same in both children), and the peak
RSS of the child (`ru_maxrss`), both in MiB.

Consumption: in a third child, `tabular_model(ds)` (64-32 dense, normalization and lookups in the graph) is trained with
`fit` on 200 batches already in memory (`ds.take(200).cache().repeat()`, warmed first): training rows/s. The input
is not the bottleneck when ours' input rows/s is at least 2x that. For the record, the same model is then trained for
the same number of steps fed straight from `lake_dataset(..., repeat=True)`.

Targets (full run): ours' rows/s >= the naive route's; ours' peak RSS < 1/4 of the naive route's; ours' input rows/s
>= 2x training rows/s. All processes share the machine's cores; the load average is printed.
The last line printed is one JSON object with every figure.
"""
from __future__ import annotations
import argparse, json, os, shutil, subprocess, sys, tempfile, time, traceback
from pathlib import Path
from benchutil import lib_version, print_table, verdict, work_args

HERE = Path(__file__).resolve()
RESULT_TAG = '@@TRAIN_BENCH_RESULT@@ '
SIZES = {'quick': dict(rows=300_000, train_steps=200), 'full': dict(rows=5_000_000, train_steps=1000)}
PART_ROWS, BATCH, SHUFFLE = 500_000, 256, 65_536
PY_BATCHES = 1000   # batches of the eager Python loop (info): the naive route takes minutes for a whole epoch this way
FEATURES = [f'f{i}' for i in range(15)] + ['i0', 'i1', 'c0', 'c1']
T_SPEED, T_MEM, T_INPUT = 1.0, 0.25, 2.0

# --------------------------------------------------------------------------------------------------------------
# the children

def rss_mib()->float:
    "The current RSS of this process, in MiB."
    with open('/proc/self/status') as f: return next(int(l.split()[1]) for l in f if l.startswith('VmRSS:')) / 1024

def peak_mib()->float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def start():
    "Import what every child imports and start TensorFlow's runtime; the RSS after this is the baseline."
    import duckdb, numpy, pandas, pyarrow  # noqa: F401
    from mlinfra_nb.workspace import import_tensorflow
    import mlinfra_nb.train  # noqa: F401
    tf = import_tensorflow()
    tf.constant(1.0) + 1   # the eager runtime and its thread pools
    return tf, rss_mib()

def repo_of(work:Path):
    from mlinfra_nb.lake import Lake
    return Lake(work/'lake').repository('bench')

def child_make(work:Path)->dict:
    import numpy as np, pyarrow as pa
    from mlinfra_nb.lake import Lake
    n = SIZES[os.environ['TRAIN_BENCH_SIZE']]['rows']
    rng = np.random.default_rng(0)
    c0, c1 = np.array(['web', 'store', 'app', 'phone']), np.array([f'region_{k:02d}' for k in range(40)])
    repo = Lake(work/'lake').create_repository('bench')
    t0 = time.perf_counter()
    for s in range(0, n, PART_ROWS):
        k = min(PART_ROWS, n - s)
        cols = {f'f{i}': rng.standard_normal(k, dtype=np.float32) for i in range(10)}
        cols |= {f'f{i}': rng.standard_normal(k) * 100 for i in range(10, 15)}
        cols |= dict(i0=rng.integers(0, 1000, k, dtype=np.int32), i1=rng.integers(0, 10**9, k, dtype=np.int64),
                     c0=c0[rng.integers(0, len(c0), k)], c1=c1[rng.integers(0, len(c1), k)],
                     label=(rng.random(k) < 0.1).astype(np.int8))
        repo.write_table('main', 'tables/x', pa.table(cols), mode='overwrite' if s == 0 else 'append')
    repo.commit('main', 'bench table')
    files = repo._part_files('main', 'tables/x')
    return dict(rows=n, columns=len(FEATURES) + 1, parts=len(files), parquet_mib=sum(os.path.getsize(f) for f in files) / 2**20,
                make_s=time.perf_counter() - t0)

def graph_epoch(tf, ds)->tuple[float, int]:
    "Seconds and rows of one epoch consumed inside a tf.function, as `model.fit` consumes its input."
    t0 = time.perf_counter()
    n = int(ds.reduce(tf.constant(0, tf.int64), lambda n, b: n + tf.shape(b[1], out_type=tf.int64)[0]))
    return time.perf_counter() - t0, n

def epochs(tf, ds)->dict:
    "One epoch in a tf.function, then the first `PY_BATCHES` batches of another in an eager Python loop."
    graph_s, graph_rows = graph_epoch(tf, ds)
    t0 = time.perf_counter(); n_py = 0
    for _, y in ds.take(PY_BATCHES): n_py += int(y.shape[0])
    return dict(graph_s=graph_s, graph_rows=graph_rows, python_s=time.perf_counter() - t0, python_rows=n_py)

def child_ours(work:Path)->dict:
    tf, base = start()
    from mlinfra_nb.train import lake_dataset
    repo = repo_of(work)
    t0 = time.perf_counter()
    ds = lake_dataset((repo, 'main', 'tables/x'), FEATURES, 'label', batch_size=BATCH, seed=0)
    setup = time.perf_counter() - t0   # the schema, the row count and the NULL/NaN check: one scan of the table
    return dict(baseline_mib=base, setup_s=setup, **epochs(tf, ds))

def child_naive(work:Path)->dict:
    tf, base = start()
    import pandas as pd
    files = repo_of(work)._part_files('main', 'tables/x')
    t0 = time.perf_counter()
    df = pd.read_parquet(files)
    slices = tf.data.Dataset.from_tensor_slices((dict(df[FEATURES]), df['label']))
    setup = time.perf_counter() - t0
    res = epochs(tf, slices.shuffle(SHUFFLE, seed=0).batch(BATCH).prefetch(tf.data.AUTOTUNE))
    unshuffled_s, unshuffled_rows = graph_epoch(tf, slices.batch(BATCH).prefetch(tf.data.AUTOTUNE))   # info: what the shuffle costs it
    return dict(baseline_mib=base, setup_s=setup, unshuffled_s=unshuffled_s, unshuffled_rows=unshuffled_rows, **res)

def child_train(work:Path)->dict:
    tf, base = start()
    from mlinfra_nb.train import lake_dataset, tabular_model
    steps = SIZES[os.environ['TRAIN_BENCH_SIZE']]['train_steps']
    repo = repo_of(work)
    ds = lake_dataset((repo, 'main', 'tables/x'), FEATURES, 'label', batch_size=BATCH, seed=0)
    model = tabular_model(ds)
    cached = ds.take(200).cache().repeat()
    model.fit(cached, steps_per_epoch=50, epochs=1, verbose=0)   # warm: the cache is filled, the step traced
    t0 = time.perf_counter(); model.fit(cached, steps_per_epoch=steps, epochs=1, verbose=0); cached_s = time.perf_counter() - t0
    live = lake_dataset((repo, 'main', 'tables/x'), FEATURES, 'label', batch_size=BATCH, seed=1, repeat=True)
    t0 = time.perf_counter(); model.fit(live, steps_per_epoch=steps, epochs=1, verbose=0); live_s = time.perf_counter() - t0
    return dict(baseline_mib=base, steps=steps, params=model.count_params(), cached_s=cached_s, live_s=live_s,
                train_rows_per_s=steps * BATCH / cached_s, live_train_rows_per_s=steps * BATCH / live_s)

CHILDREN = {'make': child_make, 'ours': child_ours, 'naive': child_naive, 'train': child_train}

def child_main(args):
    try: res = CHILDREN[args.child](Path(args.work))
    except Exception as e:
        traceback.print_exc()
        print(RESULT_TAG + json.dumps(dict(error=f'{type(e).__name__}: {e}'[:500])), flush=True); sys.exit(1)
    res['peak_mib'] = peak_mib()
    print(RESULT_TAG + json.dumps(res), flush=True)

# --------------------------------------------------------------------------------------------------------------
# the parent (it imports neither numpy nor TensorFlow: a child's ru_maxrss starts from its parent's RSS at the fork)

def run_child(name:str, work:Path, size:str)->dict:
    "Run one child; its result, or dict(error=...) with the tail of its stderr."
    print(f"  running {name} ...", file=sys.stderr, flush=True)
    log = work/f'{name}.log'
    env = dict(os.environ, PYTHONWARNINGS='ignore', TF_CPP_MIN_LOG_LEVEL='2', TRAIN_BENCH_SIZE=size,
               MLINFRA_HOME=str(work/'mlinfra-home'))
    t0 = time.perf_counter()
    with open(log, 'ab') as err:
        p = subprocess.run([sys.executable, str(HERE), '--child', name, '--work', str(work)], stdout=subprocess.PIPE, stderr=err, env=env)
    out = p.stdout.decode(errors='replace')
    line = next((l for l in reversed(out.splitlines()) if l.startswith(RESULT_TAG)), None)
    res = json.loads(line[len(RESULT_TAG):]) if line else {}
    if p.returncode != 0 or line is None or 'error' in res:
        tail = log.read_text(errors='replace')[-2500:] if log.exists() else ''
        print(f"  {name} FAILED (exit code {p.returncode}): {res.get('error', '')}\n{tail}", file=sys.stderr, flush=True)
        return dict(error=res.get('error') or f'exit code {p.returncode}')
    res['child_wall_s'] = time.perf_counter() - t0
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='300,000 rows; not comparable to the targets')
    work_args(ap)
    args = ap.parse_args()
    if args.child: return child_main(args)

    size = 'quick' if args.quick else 'full'
    version = lib_version()
    work = Path(tempfile.mkdtemp(prefix='train_bench_', dir=args.tmpdir))
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    try:
        print(f"train_bench ({'QUICK' if args.quick else 'full'}) in {work}", file=sys.stderr)
        data = run_child('make', work, size)
        if 'error' in data: raise SystemExit(f"making the data failed: {data['error']}")
        res = {c: run_child(c, work, size) for c in ('ours', 'naive', 'train')}
    finally:
        if args.keep: print(f"kept {work}", file=sys.stderr)
        else: shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - t_start
    load = (load0, os.getloadavg()[0])

    ours, naive, train = (res[c] if 'error' not in res[c] else None for c in ('ours', 'naive', 'train'))
    n = data['rows']
    def rate(r, mode):
        "rows/s of a graph epoch (the naive route's one-off read and from_tensor_slices count against it) or the Python loop (they don't)."
        return r[f'{mode}_rows'] / (r[f'{mode}_s'] + (r['setup_s'] if mode != 'python' else 0))
    fig = {}
    if ours: fig |= dict(input_rows_per_s=rate(ours, 'graph'), input_python_rows_per_s=rate(ours, 'python'), peak_mib=ours['peak_mib'],
                         baseline_mib=ours['baseline_mib'], peak_above_baseline_mib=ours['peak_mib'] - ours['baseline_mib'])
    if naive: fig |= dict(naive_rows_per_s=rate(naive, 'graph'), naive_python_rows_per_s=rate(naive, 'python'), naive_peak_mib=naive['peak_mib'],
                          naive_baseline_mib=naive['baseline_mib'], naive_peak_above_baseline_mib=naive['peak_mib'] - naive['baseline_mib'],
                          naive_read_s=naive['setup_s'], naive_unshuffled_rows_per_s=rate(naive, 'unshuffled'))
    if ours and naive:
        fig |= dict(speed_ratio_vs_naive=fig['input_rows_per_s'] / fig['naive_rows_per_s'],
                    python_speed_ratio_vs_naive=fig['input_python_rows_per_s'] / fig['naive_python_rows_per_s'],
                    memory_ratio=fig['peak_mib'] / fig['naive_peak_mib'],
                    memory_above_baseline_ratio=fig['peak_above_baseline_mib'] / fig['naive_peak_above_baseline_mib'])
    if train: fig |= dict(train_rows_per_s=train['train_rows_per_s'], live_train_rows_per_s=train['live_train_rows_per_s'])
    if ours and train: fig['input_over_consumption'] = fig['input_rows_per_s'] / train['train_rows_per_s']
    rows_ok = {c: r['graph_rows'] == n and r['python_rows'] == min(n, PY_BATCHES * BATCH) for c, r in (('ours', ours), ('naive', naive)) if r}

    k = lambda x: f'{x / 1000:,.0f}k'
    mib = lambda x: f'{x:,.0f}'
    get = lambda key, f: f(fig[key]) if key in fig else 'ERROR'
    rows = [('ours: lake_dataset (graph)', get('input_rows_per_s', k), get('peak_mib', mib), get('peak_above_baseline_mib', mib), '', ''),
            ('naive: read_parquet + from_tensor_slices (graph)', get('naive_rows_per_s', k), get('naive_peak_mib', mib),
             get('naive_peak_above_baseline_mib', mib), '', ''),
            ('naive without .shuffle (graph)', get('naive_unshuffled_rows_per_s', k), '', '', '', '(info)'),
            ('ours: lake_dataset (python loop)', get('input_python_rows_per_s', k), '', '', '', '(info)'),
            ('naive: read_parquet + from_tensor_slices (python loop)', get('naive_python_rows_per_s', k), '', '', '', '(info)')]
    if 'speed_ratio_vs_naive' in fig:
        rows += [('speed ours / naive (graph)', f"{fig['speed_ratio_vs_naive']:.2f}x", '', '', f'>= {T_SPEED:.0f}x',
                  verdict(fig['speed_ratio_vs_naive'] >= T_SPEED)),
                 ('speed ours / naive without .shuffle (graph)', f"{fig['input_rows_per_s'] / fig['naive_unshuffled_rows_per_s']:.2f}x", '', '', '', '(info)'),
                 ('speed ours / naive (python loop)', f"{fig['python_speed_ratio_vs_naive']:.2f}x", '', '', '', '(info)'),
                 ('peak RSS ours / naive', f"{fig['memory_ratio']:.3f}", '', '', f'< {T_MEM}', verdict(fig['memory_ratio'] < T_MEM)),
                 ('peak RSS above baseline ours / naive', f"{fig['memory_above_baseline_ratio']:.3f}", '', '', '', '(info)')]
    if train:
        rows += [('training, batches in memory (fit)', k(train['train_rows_per_s']), mib(train['peak_mib']), '', '', ''),
                 ('training, fed live from lake_dataset (fit)', k(train['live_train_rows_per_s']), '', '', '', '(info)')]
    if 'input_over_consumption' in fig:
        rows.append(('input rows/s / training rows/s', f"{fig['input_over_consumption']:.1f}x", '', '', f'>= {T_INPUT:.0f}x',
                     verdict(fig['input_over_consumption'] >= T_INPUT)))

    print()
    print(f"train_bench: {'QUICK mode -- sizes scaled down, PASS/FAIL is indicative only' if args.quick else 'full run'}; "
          f"{n:,} rows x {data['columns']} columns ({data['parts']} Parquet parts, {data['parquet_mib']:.0f} MiB), batch {BATCH}, "
          f"shuffle {SHUFFLE:,}; total {wall:.0f} s; library {version}; python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} at the start, {load[1]:.1f} at the end")
    print_table(('contender', 'rows/s', 'peak MiB', 'above baseline', 'target', 'vs target'), rows)
    if ours and naive:
        print(f"baseline RSS (imports + TensorFlow started): ours {ours['baseline_mib']:,.0f} MiB, naive {naive['baseline_mib']:,.0f} MiB; "
              f"set-up (counted in the graph rows/s): naive read_parquet + from_tensor_slices {naive['setup_s']:.1f} s, ours "
              f"schema, count and NULL/NaN check {ours['setup_s']:.2f} s")
    if train: print(f"training: tabular_model, {train['params']:,} parameters, {train['steps']} steps of {BATCH} rows per measurement")
    print(f"graph: one epoch inside a tf.function, as model.fit consumes it (judged); python loop: `for x, y in ds` over the first "
          f"{PY_BATCHES:,} batches of an epoch, set-up not counted (info).")
    failed = [f'{c} gave the wrong number of rows' for c, ok in rows_ok.items() if not ok]
    failed += [f"{c} failed: {res[c]['error']}" for c in res if 'error' in res[c]]
    for f in failed: print(f"FAILURE: {f}")

    rnd = lambda x, d=3: None if x is None else round(x, d)
    figures = dict(quick=args.quick, library=version, rows=n, data={k_: rnd(v, 2) for k_, v in data.items()},
                   **{k_: rnd(v, 0 if k_.endswith('rows_per_s') else 3 if 'ratio' in k_ or 'over' in k_ else 1) for k_, v in fig.items()},
                   targets=dict(speed_ratio_vs_naive=T_SPEED, memory_ratio_below=T_MEM, input_over_consumption=T_INPUT),
                   met=dict(speed='speed_ratio_vs_naive' in fig and fig['speed_ratio_vs_naive'] >= T_SPEED,
                            memory='memory_ratio' in fig and fig['memory_ratio'] < T_MEM,
                            input='input_over_consumption' in fig and fig['input_over_consumption'] >= T_INPUT),
                   rows_ok=rows_ok, children={c: {k_: rnd(v) if isinstance(v, float) else v for k_, v in r.items()} for c, r in res.items()},
                   failures=failed, load_average=[rnd(x, 2) for x in load], wall_s=rnd(wall, 1))
    print(json.dumps(figures))
    if failed: sys.exit(1)

if __name__ == '__main__':
    main()
