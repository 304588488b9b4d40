#!/usr/bin/env python
"""Benchmark of drift statistics (`mlinfra_nb.monitor.drift.data_drift`, two-stage and exact) against Evidently's
DataDriftPreset and an exact numpy/scipy implementation of the same tests.

    python bench/drift_bench.py            # full run: 1,000,000 rows x 20 columns, the at-threshold case, then 10,000,000 rows
    python bench/drift_bench.py --quick    # 100,000 rows, no 10M run, about a minute (figures are not comparable to the targets)
    python bench/drift_bench.py --evidently-python .venv-evidently/bin/python   # run Evidently in another venv

Evidently 0.7 is installed in a venv of its own (`make .venv-evidently/.ok`: evidently==0.7.23 with pandas<3, psutil) and
named with --evidently-python (or $EVIDENTLY_PYTHON); only the Evidently child runs there. Without it, Evidently is skipped.

The job: a reference and a current dataset of N rows x 20 columns, seeded: 15 numeric (normal, lognormal, uniform,
exponential, Student t, a Poisson count stored as int64, ...) and 5 categorical strings (3 to 40 categories), written
once to Parquet. Exactly 7 columns are shifted in the current data (5 numeric: mean, scale or tail; 2 categorical: the
category frequencies), the other 13 are drawn from the same distribution as the reference. With N > 1000 Evidently's
default tests are the normed Wasserstein distance (numeric) and the Jensen-Shannon distance (categorical), threshold 0.1.

Contenders, each in its own child process (its peak RSS, from `os.wait4`, is its own):
1. evidently  -- `Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)` on pandas frames read from the
                 Parquet files before the clock starts; the per-column scores are read from the snapshot.
2. scipy      -- the same tests in numpy/scipy on the same pandas frames (exact: `scipy.stats.wasserstein_distance` / the
                 reference's std, `scipy.spatial.distance.jensenshannon` on the category frequencies).
3. ours       -- `data_drift(ref, cur)` on DuckDB relations over the Parquet files, two stages: numeric scores from
                 sketches with proven bounds, a column recomputed exactly only when its bounds reach its threshold. The
                 timed call includes reading the Parquet files (the other two get their data in memory first).
4. ours_exact -- `data_drift(ref, cur, exact=True)`: every score exact (the sorted merge).
5. at threshold -- ours and ours_exact on a current dataset whose 15 numeric columns are the reference moved by
                 (1 + k/1000) x 0.1 x its std, k = -7.5 .. 6.5 (normed Wasserstein within 0.08% of the threshold, never on it),
                 so that every numeric column falls back to the exact path: the fallback is exercised and timed.
6. ours_10m   -- ours on 10,000,000-row files (full run only), on a DuckDB connection with memory_limit 512MB: time and
                 peak RSS; with ours_exact on the same files for the verdicts (leave it out with --skip ours_exact_10m).
Correctness: every contender's per-column verdict is compared with the known shifts and with the exact ones; ours' exact
scores with scipy's (max absolute difference); the exact scores must lie within ours' bounds. The script exits non-zero
if ours' verdicts differ from the exact ones anywhere, an exact score falls outside ours' bounds, ours_exact is off
scipy by more than 1e-6, or a known shift is missed. The last line printed is one JSON object with every figure.
"""
from __future__ import annotations
import argparse, json, os, shutil, sys, tempfile, time, traceback
from pathlib import Path
from benchutil import lib_version, measured_child, print_table, probe, self_peak_mib, spark_peaks, standalone_cluster, verdict, work_args

HERE = Path(__file__).resolve()
RESULT_TAG = '@@DRIFT_BENCH_RESULT@@ '
T_VS_EVIDENTLY = 50.0          # target: ours at least this many times faster than Evidently (1M rows)
T_BIG_S, T_BIG_MIB = 20.0, 1024.0   # target: 10M rows in at most this many seconds, under this peak RSS
SCORE_TOL = 1e-6               # ours_exact vs the exact scipy scores
NEAR_STEPS = [(k + 0.5) / 1000 for k in range(-8, 7)]   # the at-threshold case: 15 relative offsets from the threshold

NUMERIC = [f'n{i:02d}' for i in range(15)]
CATEGORICAL = [f'c{i}' for i in range(5)]
SHIFTED = ['n00', 'n03', 'n06', 'n09', 'n12', 'c0', 'c3']
SIZES = dict(full=1_000_000, quick=100_000)
BIG = 10_000_000
CHUNK = 1_000_000

# --------------------------------------------------------------------------------------------------------------
# the data (made once, in a child)

def _cats(k:int)->list[str]: return [f'cat_{j:02d}' for j in range(k)]

def _columns(rng, n:int, current:bool)->dict:
    "One chunk of `n` rows of all 20 columns; `current` applies the known shifts."
    import numpy as np
    s = lambda col: current and col in SHIFTED
    out = {}
    kinds = ['normal', 'lognormal', 'uniform', 'exponential', 't', 'poisson']
    for i, c in enumerate(NUMERIC):
        kind = kinds[i % len(kinds)]
        if kind == 'normal': v = rng.normal(0.5 if s(c) else 0.0, 1.0, n) * (10 ** (i % 3)) - 3.0
        elif kind == 'lognormal': v = rng.lognormal(3.3 if s(c) else 3.0, 1.0, n)
        elif kind == 'uniform': v = rng.uniform(-1.0, 1.6 if s(c) else 1.0, n)
        elif kind == 'exponential': v = rng.exponential(1.6 if s(c) else 1.0, n)
        elif kind == 't': v = rng.standard_t(3, n) * (2.0 if s(c) else 1.0)
        else: v = rng.poisson(36 if s(c) else 30, n).astype(np.int64)
        out[c] = v
    for i, c in enumerate(CATEGORICAL):
        cats = _cats([3, 8, 15, 40, 5][i])
        p = np.arange(1, len(cats) + 1, dtype=float); p /= p.sum()
        if s(c): p = p[::-1]
        out[c] = np.asarray(cats, dtype=object)[rng.choice(len(cats), n, p=p)]
    return out

def make_data(n:int, work:Path, tag:str, seed:int)->None:
    "Write `{tag}_reference.parquet` and `{tag}_current.parquet` of `n` rows each under `work`, in 1M-row chunks."
    import numpy as np, pyarrow as pa, pyarrow.parquet as pq
    for part, current in (('reference', False), ('current', True)):
        rng = np.random.default_rng([seed, int(current)])
        writer = None
        for start in range(0, n, CHUNK):
            t = pa.table(_columns(rng, min(CHUNK, n - start), current))
            writer = writer or pq.ParquetWriter(work/f'{tag}_{part}.parquet', t.schema)
            writer.write_table(t)
        writer.close()

def make_near(work:Path)->None:
    "The at-threshold case: `near_reference.parquet` (the main reference) and `near_current.parquet`, whose numeric columns"
    " are the reference moved by (1 + NEAR_STEPS[i]) x 0.1 x its std; categorical columns unchanged."
    import numpy as np, pyarrow as pa, pyarrow.parquet as pq
    ref = pq.read_table(work/'main_reference.parquet')
    pq.write_table(ref, work/'near_reference.parquet')
    cols = {}
    for c in ref.column_names:
        v = ref[c].to_numpy()
        if c in NUMERIC:
            v = v.astype(np.float64); i = NUMERIC.index(c)
            v = v + (1 + NEAR_STEPS[i]) * 0.1 * float(np.std(v))
        cols[c] = v
    pq.write_table(pa.table(cols), work/'near_current.parquet')

# --------------------------------------------------------------------------------------------------------------
# the contenders (each in a child process)


def read_pandas(work:Path, tag:str):
    import pandas as pd
    return pd.read_parquet(work/f'{tag}_reference.parquet'), pd.read_parquet(work/f'{tag}_current.parquet')

EVIDENTLY_METHODS = {'Wasserstein distance (normed)': 'wasserstein', 'Jensen-Shannon distance': 'jensenshannon', 'K-S p_value': 'ks',
                     'chi-square p_value': 'chisquare', 'Z-test p_value': 'z', 'PSI': 'psi'}

def drifted(test:str, score:float, thr:float)->bool:
    if test == 'ks': return score <= thr
    return score < thr if test in ('chisquare', 'z') else score >= thr

def child_evidently(work:Path, tag:str)->dict:
    import evidently
    from evidently import Report
    from evidently.presets import DataDriftPreset
    ref, cur = read_pandas(work, tag)
    setup_peak = self_peak_mib()
    t0 = time.perf_counter()
    snap = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    d = snap.dict()
    secs = time.perf_counter() - t0
    cols = {}
    for m in d['metrics']:
        cfg = m.get('config', {})
        if cfg.get('type', '').endswith('ValueDrift'):
            test = EVIDENTLY_METHODS.get(cfg['method'], cfg['method'])
            cols[cfg['column']] = dict(test=test, score=float(m['value']), threshold=cfg['threshold'],
                                       drifted=bool(drifted(test, float(m['value']), cfg['threshold'])))
    return dict(secs=secs, setup_peak_mib=setup_peak, version=evidently.__version__, columns=cols)

def child_scipy(work:Path, tag:str)->dict:
    "Evidently's default tests, exactly, in numpy/scipy (the rule of `mlinfra_nb.monitor.drift.default_test`)."
    import numpy as np, pandas as pd
    from scipy import stats
    from scipy.spatial import distance
    ref, cur = read_pandas(work, tag)
    setup_peak = self_peak_mib()
    t0 = time.perf_counter()
    cols = {}
    for c in ref.columns:
        r, k = ref[c].replace([np.inf, -np.inf], np.nan).dropna(), cur[c].replace([np.inf, -np.inf], np.nan).dropna()
        numeric = pd.api.types.is_float_dtype(r) or (pd.api.types.is_integer_dtype(r) and r.nunique() > 10)
        n_values = pd.concat([r, k]).nunique()
        if numeric and n_values > 5:
            test = 'wasserstein'
            score = stats.wasserstein_distance(r.to_numpy(), k.to_numpy()) / max(float(np.std(r.to_numpy())), 0.001)
        else:
            test = 'jensenshannon'
            keys = sorted(set(r.unique()) | set(k.unique()))
            rc, kc = r.value_counts(), k.value_counts()
            score = float(distance.jensenshannon([rc.get(x, 0) / len(r) for x in keys], [kc.get(x, 0) / len(k) for x in keys]))
        cols[c] = dict(test=test, score=float(score), threshold=0.1, drifted=bool(score >= 0.1))
    assert len(r) > 1000, 'the bench uses the large-reference tests only'
    return dict(secs=time.perf_counter() - t0, setup_peak_mib=setup_peak, columns=cols)

def child_ours(work:Path, tag:str, exact:bool=False)->dict:
    import duckdb
    from mlinfra_nb.monitor.drift import data_drift
    # 10M rows: DuckDB's sorts spill to disk past 512 MB instead of growing to its default of 80% of RAM
    con = duckdb.connect(config={'memory_limit': '512MB', 'temp_directory': str(work/'spill')} if tag == 'big' else {})
    ref, cur = (con.read_parquet(str(work/f'{tag}_{p}.parquet')) for p in ('reference', 'current'))
    setup_peak = self_peak_mib()
    t0 = time.perf_counter()
    res = data_drift(ref, cur, con=con, exact=exact)
    secs = time.perf_counter() - t0
    cols = {r.column: dict(test=r.test, score=float(r.score), low=float(r.score_low), high=float(r.score_high), stage=r.stage,
                           threshold=float(r.threshold), drifted=bool(r.drifted)) for r in res.columns.itertuples()}
    return dict(secs=secs, setup_peak_mib=setup_peak, dataset_drift=res.summary['dataset_drift'], recomputed=res.summary['recomputed_exactly'],
                share_drifted=res.summary['share_drifted'], columns=cols)

def child_ours_exact(work:Path, tag:str)->dict: return child_ours(work, tag, exact=True)

def child_make(work:Path, tag:str)->dict:
    t0 = time.perf_counter()
    if tag == 'near': make_near(work)
    else: make_data(int(os.environ['DRIFT_BENCH_ROWS']), work, tag, seed=0 if tag == 'main' else 1)
    return dict(make_s=time.perf_counter() - t0)

CHILDREN = {'make': child_make, 'evidently': child_evidently, 'scipy': child_scipy, 'ours': child_ours, 'ours_exact': child_ours_exact}

def child_main(args):
    try: res = CHILDREN[args.child](Path(args.work), args.tag)
    except Exception as e:
        traceback.print_exc()
        print(RESULT_TAG + json.dumps(dict(error=f'{type(e).__name__}: {e}'[:500])), flush=True); sys.exit(1)
    res['self_peak_mib'] = self_peak_mib()
    print(RESULT_TAG + json.dumps(res), flush=True)

# --------------------------------------------------------------------------------------------------------------
# the parent

def run_child(name:str, work:Path, python:str, tag:str, rows:int)->dict:
    "Run one child; its result, or dict(error=...) with the tail of its stderr."
    print(f"  running {name} ({tag}, {rows:,} rows) ...", file=sys.stderr, flush=True)
    log = work/f'{name}-{tag}.log'
    env = dict(os.environ, PYTHONWARNINGS='ignore', DRIFT_BENCH_ROWS=str(rows), DO_NOT_TRACK='1', EVIDENTLY_DISABLE_TELEMETRY='1')
    return measured_child(name, [python, str(HERE), '--child', name, '--work', str(work), '--tag', tag], log, env, RESULT_TAG)


def checks(ours:dict|None, exact:dict|None, cols:list)->dict:
    "How ours (two-stage) compares with an exact run: verdicts that differ, exact scores outside ours' bounds, fallbacks."
    if not ours or not exact: return dict(differ=None, outside=None, recomputed=None, unsettled=None)
    pad = lambda r: 1e-9 * max(abs(r['low']), abs(r['high']), 1e-300)
    return dict(differ=[k for k in cols if ours['columns'][k]['drifted'] != exact['columns'][k]['drifted']],
                outside=[k for k in cols if not ours['columns'][k]['low'] - pad(ours['columns'][k]) <= exact['columns'][k]['score']
                         <= ours['columns'][k]['high'] + pad(ours['columns'][k])],
                recomputed=ours.get('recomputed'),
                # the fallback must trigger whenever a threshold lies within a score's bounds: no sketched row may have one there
                unsettled=[k for k in cols if ours['columns'][k]['stage'] == 'sketch' and
                           ours['columns'][k]['low'] <= ours['columns'][k]['threshold'] <= ours['columns'][k]['high']])

def run_all(args, work:Path, n:int, run:dict)->tuple[dict, dict, dict]:
    "The children: {contender: result} on the main data, on the at-threshold data, and on the 10M data."
    data = run_child('make', work, sys.executable, 'main', n)
    if 'error' in data: raise SystemExit(f"making the data failed: {data['error']}")
    res, near, big = dict(make=data), {}, {}
    for c in ('evidently', 'scipy', 'ours', 'ours_exact'):
        if run[c]: res[c] = run_child(c, work, args.evidently_python if c == 'evidently' else sys.executable, 'main', n)
    if run['near']:
        made = run_child('make', work, sys.executable, 'near', n)
        near = {c: made if 'error' in made else run_child(c, work, sys.executable, 'near', n) for c in ('ours', 'ours_exact')}
    for f in work.glob('*.parquet'): f.unlink()
    if run['ours_10m']:
        made = run_child('make', work, sys.executable, 'big', BIG)
        big = dict(make=made) if 'error' in made else dict(make=made, ours=run_child('ours', work, sys.executable, 'big', BIG))
        if 'error' not in made and run['ours_exact_10m']: big['ours_exact'] = run_child('ours_exact', work, sys.executable, 'big', BIG)
    return res, near, big

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='100k rows, no 10M run; not comparable to the targets')
    ap.add_argument('--evidently-python', default=os.environ.get('EVIDENTLY_PYTHON') or sys.executable,
                    help='the Python interpreter to run Evidently with (default: $EVIDENTLY_PYTHON or this one)')
    ap.add_argument('--skip', action='append', default=[], choices=['evidently', 'scipy', 'ours', 'ours_exact', 'near', 'ours_10m', 'ours_exact_10m'],
                    help='leave out a contender or case')
    work_args(ap)
    ap.add_argument('--tag', default='main', help=argparse.SUPPRESS)
    spark_args(ap)
    args = ap.parse_args()
    if args.child: return child_main(args)
    if args.spark: return main_spark(args)
    if os.sep in args.evidently_python: args.evidently_python = os.path.abspath(args.evidently_python)

    n = SIZES['quick' if args.quick else 'full']
    version = lib_version()
    notes = {}
    ok, ev_v = probe(args.evidently_python, 'import evidently; print(evidently.__version__)')
    if not ok: notes['evidently'] = f"Evidently is not importable with {args.evidently_python} ({ev_v}): it is skipped"
    ok_ours, why = probe(sys.executable, 'from mlinfra_nb.monitor.drift import data_drift')
    if not ok_ours: notes['ours'] = f"ours is unavailable: `from mlinfra_nb.monitor.drift import data_drift` failed ({why})"
    for m in notes.values(): print(f"NOTE: {m}", file=sys.stderr)
    run = {c: c not in args.skip for c in ('evidently', 'scipy', 'ours', 'ours_exact', 'near', 'ours_10m', 'ours_exact_10m')}
    if 'evidently' in notes: run['evidently'] = False
    if 'ours' in notes: run.update(ours=False, ours_exact=False, near=False, ours_10m=False)
    if args.quick: run['ours_10m'] = False
    run['ours_exact_10m'] &= run['ours_10m']

    work = Path(tempfile.mkdtemp(prefix='drift_bench_', dir=args.tmpdir))
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    try:
        print(f"drift_bench ({'QUICK' if args.quick else 'full'}) in {work}", file=sys.stderr)
        res, near, big = run_all(args, work, n, run)
    finally:
        if args.keep: print(f"kept {work}", file=sys.stderr)
        else: shutil.rmtree(work, ignore_errors=True)
    report(args, res, near, big, n, version, ev_v, notes, time.perf_counter() - t_start, (load0, os.getloadavg()[0]))

def report(args, res, near, big, n, version, ev_v, notes, wall, load):
    "Print the table, the PASS/FAIL lines and the JSON figures; exit non-zero on a correctness failure."
    good = lambda d, c: c in d and 'error' not in d[c]
    get = lambda d, c: d[c] if good(d, c) else None
    ours, ours_x, exact, ev = get(res, 'ours'), get(res, 'ours_exact'), get(res, 'scipy'), get(res, 'evidently')
    cols = [*NUMERIC, *CATEGORICAL]
    truth = {c: c in SHIFTED for c in cols}
    speed = {c: res[c]['secs'] / ours['secs'] for c in ('evidently', 'scipy', 'ours_exact') if ours and good(res, c)}
    missed = {c: [k for k in cols if res[c]['columns'][k]['drifted'] != truth[k]] for c in ('evidently', 'scipy', 'ours', 'ours_exact') if good(res, c)}
    err = lambda a: max(abs(a['columns'][k]['score'] - exact['columns'][k]['score']) for k in cols) if exact and a else None
    main_ck = checks(ours, exact or ours_x, cols)
    near_ck = checks(get(near, 'ours'), get(near, 'ours_exact'), cols)
    big_ck = checks(get(big, 'ours'), get(big, 'ours_exact'), cols)
    vs_ev = [k for k in cols if ours and ev and ours['columns'][k]['drifted'] != ev['columns'][k]['drifted']]

    rows = []
    labels = (('evidently', f"Evidently {ev_v if 'evidently' not in notes else ''} DataDriftPreset"), ('scipy', 'numpy/scipy, exact'),
              ('ours_exact', 'ours, exact=True'), ('ours', 'ours, two-stage (default)'))
    for c, label in labels:
        r = res.get(c)
        if r is None: rows.append((label, 'n/a', '', '', '', '', '', 'skipped' if c not in notes else 'unavailable')); continue
        if 'error' in r: rows.append((label, 'ERROR', '', '', f"{r.get('peak_mib', 0):.0f}", '', '', 'ERROR')); continue
        sp = speed.get(c)
        e = err(r) if exact and c != 'scipy' else None
        fb = f"{len(r['recomputed'])}" if c == 'ours' else ''
        rows.append((label, f"{r['secs']:.2f}", f"{sp:.1f}x" if sp else '', f"{r['peak_mib']:.0f}", f"{e:.1e}" if e is not None else '', fb,
                     f"{len(missed[c])} / {len(cols)}", f"{verdict(sp >= T_VS_EVIDENTLY)} (>= {T_VS_EVIDENTLY:.0f}x)" if c == 'evidently' and sp else '-'))
    for d, label in ((near, 'at threshold'), (big, f'{BIG // 1_000_000}M rows')):
        for c in ('ours_exact', 'ours'):
            if c not in d: continue
            r = d[c]
            if 'error' in r: rows.append((f"{label}: {c}", 'ERROR', '', f"{r.get('peak_mib', 0):.0f}", '', '', '', 'ERROR')); continue
            sp = d['ours_exact']['secs'] / r['secs'] if c == 'ours' and good(d, 'ours_exact') else None
            target = '-'
            if d is big and c == 'ours': target = f"{verdict(r['secs'] <= T_BIG_S and r['peak_mib'] < T_BIG_MIB)} (<= {T_BIG_S:.0f} s, < {T_BIG_MIB:.0f} MiB)"
            rows.append((f"{label}: {'ours, exact=True' if c == 'ours_exact' else 'ours, two-stage'}", f"{r['secs']:.2f}",
                         f"{sp:.1f}x vs exact" if sp else '', f"{r['peak_mib']:.0f}", '', f"{len(r['recomputed'])}" if c == 'ours' else '',
                         f"{sum(r['columns'][k]['drifted'] != truth[k] for k in cols)} / {len(cols)}" if d is big else '', target))

    print()
    print(f"drift_bench: {'QUICK mode -- sizes scaled down, PASS/FAIL is indicative only' if args.quick else 'full run'}; "
          f"{n:,} reference rows vs {n:,} current rows x {len(cols)} columns ({len(NUMERIC)} numeric, {len(CATEGORICAL)} categorical, "
          f"{len(SHIFTED)} shifted); total {wall:.0f} s; library {version}; evidently {ev_v if 'evidently' not in notes else 'n/a'}; "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load[0]:.1f} at the start, {load[1]:.1f} at the end")
    print_table(('contender', 'seconds', 'ours (two-stage) faster by', 'peak MiB', 'max |score - scipy|', 'recomputed exactly', 'wrong verdicts', 'vs target'), rows)
    print("seconds: the timed call only (ours includes reading the Parquet files; the others get pandas frames first); peak MiB: "
          "peak RSS of the contender's child process; recomputed exactly: numeric columns whose bounds reached the threshold; "
          "wrong verdicts: columns whose verdict differs from the known shifts (the at-threshold case has none: it is checked against exact=True).")
    lines = []
    def line(name, ok, detail): lines.append(ok); print(f"{verdict(ok)}: {name}: {detail}")
    if ours and ev: line(f'ours >= {T_VS_EVIDENTLY:.0f}x Evidently at {n:,} rows', speed['evidently'] >= T_VS_EVIDENTLY, f"{speed['evidently']:.1f}x")
    if main_ck['differ'] is not None:
        line('verdicts equal the exact ones, all columns', not main_ck['differ'], f"differ on {main_ck['differ']}; {len(main_ck['recomputed'])} column(s) recomputed exactly")
        line("exact scores lie within ours' bounds", not main_ck['outside'], f"outside on {main_ck['outside']}")
    if near_ck['differ'] is not None:
        line('at threshold: verdicts equal the exact ones', not near_ck['differ'],
             f"differ on {near_ck['differ']}; {len(near_ck['recomputed'])} of {len(NUMERIC)} numeric columns recomputed exactly; "
             f"{near['ours']['secs']:.2f} s two-stage vs {near['ours_exact']['secs']:.2f} s exact")
        exact_sketch = [k for k in NUMERIC if near['ours']['columns'][k]['stage'] == 'sketch' and near['ours']['columns'][k]['low'] == near['ours']['columns'][k]['high']]
        line('at threshold: the fallback triggers on every column whose bounds hold the threshold', not near_ck['unsettled'],
             f"recomputed {sorted(near_ck['recomputed'])}; settled by the sketch: {exact_sketch} (one value per bin: bounds of zero width)"
             + (f"; NOT recomputed although the threshold is within the bounds: {near_ck['unsettled']}" if near_ck['unsettled'] else ''))
    if good(big, 'ours'):
        b = big['ours']
        line(f'{BIG // 1_000_000}M rows in <= {T_BIG_S:.0f} s', b['secs'] <= T_BIG_S, f"{b['secs']:.2f} s")
        line(f'{BIG // 1_000_000}M rows under {T_BIG_MIB:.0f} MiB', b['peak_mib'] < T_BIG_MIB, f"{b['peak_mib']:.0f} MiB peak RSS")
        if big_ck['differ'] is not None: line(f'{BIG // 1_000_000}M rows: verdicts equal the exact ones', not big_ck['differ'], f"differ on {big_ck['differ']}; recomputed {big_ck['recomputed']}")
    if ours and ev: print(f"  ours vs Evidently: same verdict on {len(cols) - len(vs_ev)} / {len(cols)}" + (f"; differ on {vs_ev}" if vs_ev else ''))
    if ours:
        print('  per column (ours): ' + ', '.join(f"{k} {ours['columns'][k]['test'][:4]} [{ours['columns'][k]['low']:.4f}, {ours['columns'][k]['high']:.4f}]"
                                                   f"{'*' if ours['columns'][k]['drifted'] else ''}" for k in cols) + '   (* drifted)')
    for d in (res, near, big):
        for c, r in d.items():
            if 'error' in r: print(f"ERROR: {c}: {r['error']}")
    for m in notes.values(): print(f"NOTE: {m}")

    failed = [f"{c} failed" for d in (res, near, big) for c, r in d.items() if 'error' in r]
    if main_ck['differ'] or main_ck['outside']: failed.append(f"ours vs exact: verdicts differ on {main_ck['differ']}, exact score outside the bounds on {main_ck['outside']}")
    for ck, what in ((main_ck, 'main'), (near_ck, 'at threshold'), (big_ck, '10M')):
        if ck['unsettled']: failed.append(f"{what}: the threshold lies within the bounds of {ck['unsettled']}, which were not recomputed")
    if near_ck['differ'] or near_ck['outside']: failed.append(f"at threshold: verdicts differ on {near_ck['differ']}, outside the bounds on {near_ck['outside']}")
    if big_ck['differ'] or big_ck['outside']: failed.append(f"10M: verdicts differ on {big_ck['differ']}, outside the bounds on {big_ck['outside']}")
    if ours_x and exact and (err(ours_x) > SCORE_TOL): failed.append(f"ours_exact is off the scipy scores by {err(ours_x):.2e}")
    for c in ('ours', 'ours_exact'):
        if missed.get(c): failed.append(f"{c} gets the known shifts wrong on {missed[c]}")
    for f in failed: print(f"CORRECTNESS FAILURE: {f}")

    rnd = lambda x, d=3: None if x is None else round(x, d)
    fig = lambda r: None if not r else dict(secs=rnd(r.get('secs')), peak_mib=rnd(r.get('peak_mib'), 1), setup_peak_mib=rnd(r.get('setup_peak_mib'), 1),
                                            recomputed=r.get('recomputed'), error=r.get('error'))
    figures = dict(quick=args.quick, library=version, evidently=ev_v if 'evidently' not in notes else None, rows=n, columns=len(cols),
                   shifted=SHIFTED, make_s=rnd(res['make'].get('make_s'), 1),
                   contenders={c: dict(fig(r), wrong_verdicts=missed.get(c)) for c, r in res.items() if c != 'make'},
                   speedup_vs_evidently=rnd(speed.get('evidently'), 2), speedup_vs_scipy=rnd(speed.get('scipy'), 2),
                   speedup_vs_ours_exact=rnd(speed.get('ours_exact'), 2),
                   max_score_error_ours_exact=err(ours_x), max_score_error_evidently=err(ev),
                   verdicts_vs_exact=main_ck, verdicts_differ_from_evidently=vs_ev if ours and ev else None,
                   at_threshold={c: fig(r) for c, r in near.items()}, at_threshold_checks=near_ck,
                   big={c: fig(r) for c, r in big.items() if c != 'make'}, big_checks=big_ck, big_make_s=rnd(big.get('make', {}).get('make_s'), 1),
                   targets=dict(speedup_vs_evidently=T_VS_EVIDENTLY, big_s=T_BIG_S, big_mib=T_BIG_MIB, max_score_error=SCORE_TOL),
                   passed=all(lines), correctness_failures=failed, notes=notes, load_average=[rnd(x, 2) for x in load], wall_s=rnd(wall, 1))
    print(json.dumps(figures))
    if failed: sys.exit(1)

# --------------------------------------------------------------------------------------------------------------
# Spark contenders: `python bench/drift_bench.py --spark [--rows N]`
# ours on Spark local[2] and on a 2-worker standalone cluster on 127.0.0.1 (tests/spark_cluster.py), side by side with
# ours on DuckDB and the exact scipy implementation, on the same Parquet files. Time of the timed call, peak RSS of the
# driver (the Python child, and its JVM's VmHWM) and of the executors (each executor JVM's VmHWM, read before the app
# ends), and the max |score - exact| and wrong verdicts of each.

def spark_args(ap):
    ap.add_argument('--spark', action='store_true', help='run the Spark contenders (local[2] and a 2-worker cluster) against ours on DuckDB')
    ap.add_argument('--rows', type=int, default=None, help='rows per dataset for --spark (default: 100,000 with --quick, else 1,000,000)')

def child_ours_spark(work:Path, tag:str)->dict:
    from mlinfra_nb.features.spark import spark_session
    from mlinfra_nb.monitor.spark import data_drift
    from mlinfra_nb.workspace import Workspace
    master = os.environ.get('DRIFT_BENCH_SPARK_MASTER', 'local[2]')
    conf = {'spark.ui.enabled': 'false', 'spark.sql.shuffle.partitions': '4', 'spark.driver.memory': '1g'}
    if master.startswith('spark://'): conf.update({'spark.executor.memory': '768m', 'spark.cores.max': '2', 'spark.executor.cores': '1'})
    spark = spark_session(Workspace(work/f'ws-{tag}', env={}), master=master, conf=conf)
    spark.sparkContext.setLogLevel('ERROR')
    ref, cur = (spark.read.parquet(str(work/f'{tag}_{p}.parquet')) for p in ('reference', 'current'))
    setup_peak = self_peak_mib()
    t0 = time.perf_counter()
    res = data_drift(ref, cur, spark=spark)
    secs = time.perf_counter() - t0
    peaks = spark_peaks(spark.sparkContext)
    cols = {r.column: dict(test=r.test, score=float(r.score), threshold=float(r.threshold), drifted=bool(r.drifted))
            for r in res.columns.itertuples()}
    spark.stop()
    return dict(secs=secs, setup_peak_mib=setup_peak, master=master, **peaks, columns=cols)

CHILDREN['ours_spark'] = child_ours_spark

def main_spark(args):
    "Ours on DuckDB, on Spark local[2] and on a 2-worker cluster, and the exact scipy scores, on the same data; a table and a JSON line."
    n = args.rows or SIZES['quick' if args.quick else 'full']
    cluster, why = standalone_cluster(workers=2, cores=1, memory='768m')
    if why: raise SystemExit(f"the Spark contenders need Java and PySpark: {why}")
    work = Path(tempfile.mkdtemp(prefix='drift_bench_spark_', dir=args.tmpdir))
    load0, t_start, res = os.getloadavg()[0], time.perf_counter(), {}
    try:
        data = run_child('make', work, sys.executable, 'main', n)
        if 'error' in data: raise SystemExit(f"making the data failed: {data['error']}")
        for c in ('scipy', 'ours'): res[c] = run_child(c, work, sys.executable, 'main', n)
        res['spark_local'] = run_child('ours_spark', work, sys.executable, 'main', n)
        with cluster:
            os.environ['DRIFT_BENCH_SPARK_MASTER'] = cluster.url
            try: res['spark_cluster'] = run_child('ours_spark', work, sys.executable, 'main', n)
            finally: del os.environ['DRIFT_BENCH_SPARK_MASTER']
    finally:
        if not args.keep: shutil.rmtree(work, ignore_errors=True)
    return _report_spark(args, n, res, load0, time.perf_counter() - t_start)

def _report_spark(args, n:int, res:dict, load0:float, wall:float):
    cols, good = [*NUMERIC, *CATEGORICAL], lambda c: 'error' not in res.get(c, {'error': 1})
    exact = res['scipy'] if good('scipy') else None
    truth = {c: c in SHIFTED for c in cols}
    err = lambda r: max(abs(r['columns'][k]['score'] - exact['columns'][k]['score']) for k in cols) if exact else None
    vs_duck = lambda r: max(abs(r['columns'][k]['score'] - res['ours']['columns'][k]['score']) for k in cols) if good('ours') else None
    rows, figs = [], {}
    for c, label in (('scipy', 'numpy/scipy, exact'), ('ours', 'ours on DuckDB'), ('spark_local', 'ours on Spark local[2]'),
                     ('spark_cluster', 'ours on Spark, 2-worker cluster')):
        r = res.get(c, {'error': 'not run'})
        if 'error' in r: rows.append((label, 'ERROR', '', '', '', '', '', '')); figs[c] = dict(error=r['error']); continue
        wrong = [k for k in cols if r['columns'][k]['drifted'] != truth[k]]
        ex = [k for k in cols if exact and r['columns'][k]['drifted'] != exact['columns'][k]['drifted']]
        execs = r.get('executor_peaks_mib') or []
        f = dict(secs=round(r['secs'], 3), peak_mib=round(r['peak_mib'], 1), driver_jvm_peak_mib=r.get('driver_jvm_peak_mib'),
                 executor_peaks_mib=execs, max_score_error=err(r) if c != 'scipy' else 0.0, max_diff_vs_duckdb=vs_duck(r) if c.startswith('spark') else None,
                 wrong_verdicts=wrong, verdicts_differ_from_exact=ex)
        figs[c] = f
        rows.append((label, f"{r['secs']:.2f}", f"{r['secs'] / res['ours']['secs']:.1f}x" if good('ours') and c != 'scipy' else '',
                     f"{r['peak_mib']:.0f}", f"{f['driver_jvm_peak_mib']:.0f}" if f['driver_jvm_peak_mib'] else '',
                     ' + '.join(f'{e:.0f}' for e in execs), f"{f['max_score_error']:.1e}" if f['max_score_error'] is not None else '',
                     f"{len(wrong)} / {len(cols)}, {len(ex)} vs exact"))
    print(f"\ndrift_bench --spark: {n:,} reference rows vs {n:,} current rows x {len(cols)} columns; total {wall:.0f} s; "
          f"{os.cpu_count()} CPUs, load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print_table(('contender', 'seconds', 'time / DuckDB', 'python peak MiB', 'driver JVM peak MiB', 'executor peaks MiB',
                 'max |score - exact|', 'wrong verdicts'), rows)
    failed = [c for c, f in figs.items() if c.startswith('spark') and ('error' in f or f['verdicts_differ_from_exact'] or (f['max_score_error'] or 0) > SCORE_TOL)]
    for c in failed: print(f"CORRECTNESS FAILURE: {c}")
    print(json.dumps(dict(spark=True, quick=args.quick, rows=n, contenders=figs, correctness_failures=failed,
                          load_average=[round(load0, 2), round(os.getloadavg()[0], 2)], wall_s=round(wall, 1))))
    if failed: sys.exit(1)

if __name__ == '__main__':
    main()
