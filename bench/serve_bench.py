#!/usr/bin/env python
"""Benchmark of the local TF-Serving-compatible server (`mlinfra serve`): throughput and p50/p99 latency at concurrency
1, 16 and 64, REST against gRPC, batching on against off, and the overhead over calling the model in-process.

    python bench/serve_bench.py            # full run: 8 s per measurement (a few minutes)
    python bench/serve_bench.py --quick    # 2 s per measurement, concurrency 1 and 64 (about a minute)

The model: `tabular_model` (normalization and lookups in the graph, 64-32 dense) trained for one epoch on 20,000
synthetic transactions, registered and exported with `export_model` (TF Serving's layout, warmup requests included).
Each request is one transaction (one row, 4 raw features), as an online fraud check sends it.

The server runs as its own process (`mlinfra serve --model_name fraud --model_base_path ...`), started fresh for
batching off and for batching on (`--enable_batching`, max_batch_size 64, batch_timeout_micros 2000, 2 threads).
The load comes from this process: `concurrency` threads, each with its own client (httpx for REST, the
tensorflow-serving-api stub for gRPC), sending requests back to back for the measurement's duration. The server and
the load share the machine's cores; the load average is printed.

In-process: the exported SavedModel's `serving_default` called with one row, back to back in one thread.

Target: with batching, throughput at concurrency 64 is at least 5x that without batching (judged per protocol).
The last line printed is one JSON object with every figure.
"""
from __future__ import annotations
import argparse, json, os, socket, subprocess, sys, tempfile, threading, time
from pathlib import Path
import numpy as np
from benchutil import lib_version, print_table

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
FEATS = ['amount', 'category', 'merchant_id', 'hour']

def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def build_model(work:Path)->tuple[Path, list[dict]]:
    "Train, register and export the tabular model; return its base path and sample rows."
    from mlinfra_nb.datasets import transactions
    from mlinfra_nb.lake import Lake
    from mlinfra_nb.registry import ModelRegistry
    from mlinfra_nb.serve.export import export_model
    from mlinfra_nb.train import tabular_model, train
    from mlinfra_nb.workspace import Workspace
    ws, lake = Workspace(work/'ws', env={}), Lake(work/'lake')
    repo = lake.create_repository('bench')
    tx = transactions(20_000, seed=1); tx['hour'] = tx.ts.dt.hour
    repo.write_table('main', 'train', tx[tx.ts < '2026-01-22'][FEATS + ['is_fraud']])
    repo.write_table('main', 'valid', tx[tx.ts >= '2026-01-22'][FEATS + ['is_fraud']])
    repo.commit('main', 'bench data')
    run = train(tabular_model, (repo, 'main', 'train'), (repo, 'main', 'valid'), features=FEATS, label='is_fraud', epochs=1,
                workspace=ws, progress=False, tensorboard=False)
    reg = ModelRegistry(lake, workspace=ws)
    reg.register(run, 'fraud')
    export_model(reg, 'fraud', work/'models')
    rows = tx[FEATS].head(512).to_dict('records')
    return work/'models'/'fraud', [{k: (v.item() if hasattr(v, 'item') else v) for k, v in r.items()} for r in rows]

def in_process(base:Path, rows:list, seconds:float)->dict:
    "Single-row calls of the exported signature, back to back."
    import tensorflow as tf
    fn = tf.saved_model.load(str(base/'1')).signatures['serving_default']
    spec = fn.structured_input_signature[1]
    args = [{k: tf.constant([r[k]], dtype=spec[k].dtype) for k in FEATS} for r in rows]
    for a in args[:20]: fn(**a)
    lat, t0, i = [], time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter(); fn(**args[i % len(args)]); lat.append(time.perf_counter() - t); i += 1
    return {'rps': len(lat) / (time.perf_counter() - t0), 'p50_ms': 1e3 * np.percentile(lat, 50), 'p99_ms': 1e3 * np.percentile(lat, 99)}

def start_server(base:Path, work:Path, batching:bool)->tuple[subprocess.Popen, int, int]:
    rest, grpc_port = free_port(), free_port()
    cmd = [sys.executable, '-c', 'import sys; from mlinfra_nb.cli import main; sys.exit(main())', 'serve', '--model_name', 'fraud',
           '--model_base_path', str(base), '--rest_api_port', str(rest), '--port', str(grpc_port)]
    if batching:
        from mlinfra_nb.serve.config import batching_parameters, write_text_proto
        f = write_text_proto(batching_parameters(max_batch_size=64, batch_timeout_micros=2000, num_batch_threads=2, max_enqueued_batches=1000), work/'batching.config')
        cmd += ['--enable_batching', '--batching_parameters_file', str(f)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import httpx
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if p.poll() is not None: raise RuntimeError(f"server exited: {p.stderr.read()[-2000:]}")
        try:
            if httpx.get(f'http://127.0.0.1:{rest}/v1/models/fraud', timeout=1).json()['model_version_status'][0]['state'] == 'AVAILABLE': break
        except Exception: time.sleep(0.2)
    return p, rest, grpc_port

def load(protocol:str, rest:int, grpc_port:int, rows:list, concurrency:int, seconds:float)->dict:
    "`concurrency` threads sending one-row predicts back to back for `seconds`."
    from mlinfra_nb.serve.client import GrpcClient, RestClient
    lat, errors, lock, stop = [], [0], threading.Lock(), threading.Event()
    def worker(k):
        c = RestClient(f'http://127.0.0.1:{rest}', timeout=30, retries=0) if protocol == 'REST' else GrpcClient(f'127.0.0.1:{grpc_port}', timeout=30, retries=0)
        if protocol == 'REST': c._outputs[('fraud', None, None, 'serving_default')] = ['output_0']   # skip the metadata call
        mine, i = [], k
        while not stop.is_set():
            t = time.perf_counter()
            try: c.predict('fraud', [rows[i % len(rows)]]); mine.append(time.perf_counter() - t)
            except Exception:
                with lock: errors[0] += 1
            i += concurrency
        with lock: lat.extend(mine)
        c.close()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads: t.start()
    time.sleep(seconds); stop.set()
    for t in threads: t.join()
    wall = time.perf_counter() - t0
    return {'rps': len(lat) / wall, 'p50_ms': 1e3 * np.percentile(lat, 50) if lat else float('nan'),
            'p99_ms': 1e3 * np.percentile(lat, 99) if lat else float('nan'), 'requests': len(lat), 'errors': errors[0]}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='2 s per measurement, concurrency 1 and 64')
    args = ap.parse_args()
    seconds, levels = (2.0, [1, 64]) if args.quick else (8.0, [1, 16, 64])
    t_start, load0 = time.time(), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix='serve-bench-'))
    base, rows = build_model(work)
    results = {'in_process': in_process(base, rows, seconds)}
    for batching in (False, True):
        p, rest, grpc_port = start_server(base, work, batching)
        try:
            for protocol in ('REST', 'gRPC'):
                load(protocol, rest, grpc_port, rows, 4, 1.0)        # warm the server's paths
                for c in levels:
                    results[f"{'batch' if batching else 'nobatch'}/{protocol}/{c}"] = load(protocol, rest, grpc_port, rows, c, seconds)
        finally: p.terminate(); p.wait(30)                             # by pid
    table = [('in-process, serving_default, 1 row', f"{results['in_process']['rps']:,.0f}", f"{results['in_process']['p50_ms']:.2f}",
              f"{results['in_process']['p99_ms']:.2f}", '', '')]
    for key, r in results.items():
        if key == 'in_process': continue
        b, proto, c = key.split('/')
        table.append((f"{proto}, batching {'on' if b == 'batch' else 'off'}, concurrency {c}", f"{r['rps']:,.0f}", f"{r['p50_ms']:.2f}",
                      f"{r['p99_ms']:.2f}", f"{r['requests']:,}", str(r['errors'])))
    print(f"serve_bench: {'quick' if args.quick else 'full'} run, {seconds:.0f} s per measurement; library {lib_version()}; "
          f"{os.cpu_count()} CPUs, load average {load0[0]:.2f} at the start")
    print_table(('measurement', 'req/s', 'p50 ms', 'p99 ms', 'requests', 'errors'), table)
    top = max(levels)
    fig = {'quick': args.quick, 'library': lib_version(), 'seconds': seconds, 'in_process_rps': round(results['in_process']['rps'], 1),
           'in_process_p50_ms': round(results['in_process']['p50_ms'], 3)}
    print()
    for proto in ('REST', 'gRPC'):
        on, off = results[f'batch/{proto}/{top}']['rps'], results[f'nobatch/{proto}/{top}']['rps']
        ratio = on / off if off else float('nan')
        one = results[f'nobatch/{proto}/1']
        overhead = one['p50_ms'] - results['in_process']['p50_ms']
        print(f"{proto}: batching on/off at concurrency {top}: {ratio:.2f}x (target >= 5x: {'PASS' if ratio >= 5 else 'FAIL'}); "
              f"overhead over in-process at concurrency 1: +{overhead:.2f} ms p50")
        fig |= {f'{proto.lower()}_batching_speedup_c{top}': round(ratio, 2), f'{proto.lower()}_overhead_ms_p50': round(overhead, 3)}
        for k, r in results.items():
            if f'/{proto}/' in k: fig[f"{k.replace('/', '_').lower()}_rps"] = round(r['rps'], 1); fig[f"{k.replace('/', '_').lower()}_p99_ms"] = round(r['p99_ms'], 2)
    fig['wall_s'] = round(time.time() - t_start, 1)
    fig['load_average'] = [round(x, 2) for x in (load0[0], os.getloadavg()[0])]
    print(json.dumps(fig))

if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
