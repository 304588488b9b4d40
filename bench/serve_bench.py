#!/usr/bin/env python
"""Benchmark of the local TF-Serving-compatible server (`mlinfra serve`): throughput and p50/p99 latency at concurrency
1, 16 and 64, REST against gRPC, batching on against off, and the overhead over calling the model in-process.

    python bench/serve_bench.py            # full run: 3 repetitions of 4 s per measurement (about 3.5 minutes)
    python bench/serve_bench.py --quick    # 2 repetitions of 2 s, concurrency 1 and 64 (about 1.5 minutes)
    python bench/serve_bench.py --quick --protocol gRPC --batch-timeout-micros 20000   # one protocol, other batching

The model: `tabular_model` (normalization and lookups in the graph, 64-32 dense) trained for one epoch on 20,000
synthetic transactions, registered and exported with `export_model` (TF Serving's layout, warmup requests included).
Each request is one transaction (one row, 4 raw features), as an online fraud check sends it.

Two servers run side by side as their own processes (`mlinfra serve --model_name fraud --model_base_path ...`): one
without batching, one with (`--enable_batching`, max_batch_size 64, batch_timeout_micros 2000, 2 threads; the last two
can be changed with --batch-timeout-micros and --batch-threads). The load
comes from a separate process (`serve_bench.py --load`, one asyncio thread, no TensorFlow): `concurrency` keep-alive
HTTP/1.1 connections sending pre-encoded requests (REST), or `concurrency` calls in flight on one grpc.aio channel with
pre-serialized `PredictRequest` bytes (gRPC), back to back for the measurement's duration. The bodies are what
RestClient / GrpcClient send for one row; one answer per measurement is checked against the model called in-process.

The machine is shared and its speed drifts (the same pure-Python loop takes 1.0x to 1.8x as long from one second to
the next on these VMs), so each measurement is repeated, batching off and on alternating (off-on, on-off, ...), and the
table shows each one's median repetition; the ratio is the median of the per-repetition on/off ratios. The server and
the load share the machine's cores; the table shows each one's CPU time per request.

Transport ceilings: the same load against an empty handler (an ASGI app under uvicorn answering a fixed body; a
grpc.aio PredictionService returning an empty response) shows the most each protocol's Python stack can carry here,
so a ratio can be read against it (no batching can lift a server above its transport's ceiling).

In-process: the exported SavedModel's `serving_default` called with one row (and with 64 rows), back to back in one thread.

Target: with batching, throughput at concurrency 64 is at least 5x that without batching (judged per protocol).
The last line printed is one JSON object with every figure.
"""
from __future__ import annotations
import argparse, asyncio, importlib.util, json, os, socket, statistics, subprocess, sys, tempfile, time
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

def in_process(base:Path, rows:list, seconds:float, batch:int=1)->dict:
    "Calls of the exported signature on `batch` rows at a time, back to back; also the outputs for every row (to check servers)."
    import tensorflow as tf
    fn = tf.saved_model.load(str(base/'1')).signatures['serving_default']
    spec = fn.structured_input_signature[1]
    args = [{k: tf.constant([rows[(i + j) % len(rows)][k] for j in range(batch)], dtype=spec[k].dtype) for k in FEATS} for i in range(0, len(rows), batch)]
    for a in args[:20]: fn(**a)
    lat, t0, i = [], time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter(); fn(**args[i % len(args)]); lat.append(time.perf_counter() - t); i += 1
    expected = fn(**{k: tf.constant([r[k] for r in rows], dtype=spec[k].dtype) for k in FEATS})['output_0'].numpy()
    return {'rps': batch * len(lat) / (time.perf_counter() - t0), 'p50_ms': 1e3 * np.percentile(lat, 50), 'p99_ms': 1e3 * np.percentile(lat, 99),
            'expected': expected, 'dtypes': {k: spec[k].dtype.name for k in FEATS}}

def request_bodies(rows:list, dtypes:dict)->dict:
    "Each row as the one-row predict request RestClient and GrpcClient send for it: JSON, and serialized `PredictRequest` bytes."
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    def grpc_body(r):
        req = predict_pb2.PredictRequest(); req.model_spec.name, req.model_spec.signature_name = 'fraud', 'serving_default'
        for k in FEATS: req.inputs[k].CopyFrom(tf.make_tensor_proto(np.array([r[k].encode()], object) if dtypes[k] == 'string' else np.array([r[k]], dtypes[k])))
        return req.SerializeToString()
    return {'REST': [json.dumps({'signature_name': 'serving_default', 'instances': [r]}).encode() for r in rows], 'gRPC': [grpc_body(r) for r in rows]}

def check_sample(protocol:str, sample, expected:np.ndarray):
    "The server's answer to one request equals the model called in-process on that row."
    import base64, tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    i, body = sample[0], base64.b64decode(sample[1])
    got = np.array(json.loads(body)['predictions'][0]) if protocol == 'REST' else tf.make_ndarray(predict_pb2.PredictResponse.FromString(body).outputs['output_0'])[0]
    if not np.allclose(got, expected[i], atol=1e-5): raise AssertionError(f"{protocol}: row {i} served {got}, in-process {expected[i]}")

def start_server(base:Path, work:Path, batching:bool, timeout_us:int=2000, threads:int=2)->tuple[subprocess.Popen, int, int]:
    rest, grpc_port = free_port(), free_port()
    cmd = [sys.executable, '-c', 'import sys; from mlinfra_nb.cli import main; sys.exit(main())', 'serve', '--model_name', 'fraud',
           '--model_base_path', str(base), '--rest_api_port', str(rest), '--port', str(grpc_port)]
    if batching:
        from mlinfra_nb.serve.config import batching_parameters, write_text_proto
        f = write_text_proto(batching_parameters(max_batch_size=64, batch_timeout_micros=timeout_us, num_batch_threads=threads, max_enqueued_batches=1000), work/'batching.config')
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

class _HttpConn(asyncio.Protocol):
    "One keep-alive HTTP/1.1 connection sending pre-encoded requests back to back; a response is framed by its Content-Length."
    def __init__(self, run, k:int): self.run, self.k, self.buf = run, k, b''
    def connection_made(self, transport): self.transport = transport; self.send()
    def send(self):
        if self.run.stop: return
        self.i, self.t = self.k % len(self.run.bodies), time.perf_counter()
        self.transport.write(self.run.bodies[self.i]); self.k += self.run.concurrency
    def data_received(self, data:bytes):
        buf = self.buf + data
        while (h := buf.find(b'\r\n\r\n')) >= 0:
            head = buf[:h].lower(); i = head.find(b'content-length:')
            n = int(head[i + 15:].split(b'\r\n', 1)[0]) if i >= 0 else 0
            if len(buf) < h + 4 + n: break
            self.run.got(self.i, self.t, int(head[9:12]) == 200, buf[h + 4:h + 4 + n]); buf = buf[h + 4 + n:]
            self.send()
        self.buf = buf
    def connection_lost(self, exc):
        if not self.run.stop: self.run.errors += 1

class _Run:
    "What a load run saw: latencies of answered requests, errors, and one (request index, response body) to check."
    def __init__(self, bodies:list, concurrency:int): self.bodies, self.concurrency, self.stop, self.lat, self.errors, self.sample = bodies, concurrency, False, [], 0, None
    def got(self, i:int, t:float, ok:bool, body:bytes):
        if self.stop: return
        if not ok: self.errors += 1; return
        self.lat.append(time.perf_counter() - t)
        if self.sample is None: self.sample = (i, body)

async def _rest_load(port:int, run:_Run, seconds:float):
    loop = asyncio.get_running_loop()
    conns = [(await loop.create_connection(lambda k=k: _HttpConn(run, k), '127.0.0.1', port))[1] for k in range(run.concurrency)]
    await asyncio.sleep(seconds); run.stop = True
    for c in conns: c.transport.close()

async def _grpc_load(port:int, run:_Run, seconds:float):
    import grpc
    async with grpc.aio.insecure_channel(f'127.0.0.1:{port}') as channel:
        predict = channel.unary_unary('/tensorflow.serving.PredictionService/Predict')   # bytes in, bytes out: no protobuf work here
        async def worker(k):
            while not run.stop:
                i, t = k % len(run.bodies), time.perf_counter()
                try: run.got(i, t, True, await predict(run.bodies[i], timeout=30))
                except grpc.aio.AioRpcError: run.errors += not run.stop
                k += run.concurrency
        tasks = [asyncio.create_task(worker(k)) for k in range(run.concurrency)]
        await asyncio.sleep(seconds); run.stop = True
        await asyncio.gather(*tasks)

def load_process(spec:dict)->dict:
    "Run in the load process: `concurrency` connections (asyncio, one thread) sending pre-encoded one-row predicts back to back."
    import base64, resource
    run = _Run([base64.b64decode(b) for b in spec['bodies']], spec['concurrency'])
    if spec['protocol'] == 'REST':
        head = 'POST /v1/models/fraud:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n'
        run.bodies = [head.format(len(b)).encode() + b for b in run.bodies]
    cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    c0 = cpu()
    asyncio.run((_rest_load if spec['protocol'] == 'REST' else _grpc_load)(spec['port'], run, spec['seconds']))
    lat = np.array(run.lat)
    return {'rps': len(lat) / spec['seconds'], 'p50_ms': 1e3 * np.percentile(lat, 50) if len(lat) else float('nan'),
            'p99_ms': 1e3 * np.percentile(lat, 99) if len(lat) else float('nan'), 'requests': len(lat), 'errors': run.errors,
            'load_cpu_us': 1e6 * (cpu() - c0) / max(len(lat), 1), 'sample': [run.sample[0], base64.b64encode(run.sample[1]).decode()] if run.sample else None}

def load(protocol:str, port:int, bodies:list, concurrency:int, seconds:float, server_pid:int)->dict:
    "Run the load in its own process (so it does not share this one's interpreter); add the server's CPU time per request."
    import base64
    spec = {'protocol': protocol, 'port': port, 'concurrency': concurrency, 'seconds': seconds, 'bodies': [base64.b64encode(b).decode() for b in bodies]}
    cpu0 = _proc_cpu(server_pid)
    out = subprocess.run([sys.executable, __file__, '--load'], input=json.dumps(spec), capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0: raise RuntimeError(f"load process failed: {out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r['server_cpu_us'] = 1e6 * (_proc_cpu(server_pid) - cpu0) / max(r['requests'], 1)   # includes the load process's start-up time
    return r

def _proc_cpu(pid:int)->float:
    "CPU seconds (user + system) used so far by process `pid`."
    v = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf('SC_CLK_TCK')

EMPTY_REST = """
import sys, uvicorn
body = b'{"predictions": [[0.5]]}'
async def app(scope, receive, send):
    if scope['type'] != 'http': return
    more = True
    while more: more = (await receive()).get('more_body', False)
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'application/json'), (b'content-length', b'24')]})
    await send({'type': 'http.response.body', 'body': body})
uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[1]), log_level='warning', lifespan='off', access_log=False, loop='auto')
"""
EMPTY_GRPC = """
import sys, asyncio, grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
class Empty(prediction_service_pb2_grpc.PredictionServiceServicer):
    async def Predict(self, request, context): return predict_pb2.PredictResponse()
async def main():
    s = grpc.aio.server(); prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Empty(), s)
    s.add_insecure_port('127.0.0.1:' + sys.argv[1]); await s.start(); await s.wait_for_termination()
asyncio.run(main())
"""

def ceiling(protocol:str, bodies:list, seconds:float)->dict:
    "The load at concurrency 64 against an empty handler of `protocol` (uvicorn ASGI app, grpc.aio servicer)."
    port = free_port()
    p = subprocess.Popen([sys.executable, '-c', EMPTY_REST if protocol == 'REST' else EMPTY_GRPC, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); break
            except OSError: time.sleep(0.1)
        load(protocol, port, bodies, 4, 0.5, p.pid)
        return load(protocol, port, bodies, 64, seconds, p.pid)
    finally: p.terminate(); p.wait(30)                                 # by pid

def median_run(runs:list)->dict:
    "The repetition with the median throughput (the lower middle one of an even count), with every repetition's req/s."
    r = dict(sorted(runs, key=lambda r: r['rps'])[(len(runs) - 1) // 2])
    r['reps_rps'] = [round(x['rps'], 1) for x in runs]
    return r

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='2 repetitions of 2 s, concurrency 1 and 64')
    ap.add_argument('--reps', type=int, help='repetitions per measurement (default 3, quick 2)')
    ap.add_argument('--protocol', choices=['REST', 'gRPC'], action='append', help='measure only this protocol (default both)')
    ap.add_argument('--batch-timeout-micros', type=int, default=2000, help="the batching server's batch_timeout_micros")
    ap.add_argument('--batch-threads', type=int, default=2, help="the batching server's num_batch_threads")
    args = ap.parse_args()
    protocols = args.protocol or ['REST', 'gRPC']
    seconds, levels, reps = (2.0, [1, 64], 2) if args.quick else (4.0, [1, 16, 64], 3)
    reps = args.reps or reps
    t_start, load0 = time.time(), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix='serve-bench-'))
    base, rows = build_model(work)
    results = {'in_process': in_process(base, rows, seconds)}
    in64 = in_process(base, rows, seconds, batch=64)
    bodies = request_bodies(rows, results['in_process']['dtypes'])
    servers = {}
    try:
        for batching in (False, True): servers[batching] = start_server(base, work, batching, args.batch_timeout_micros, args.batch_threads)
        runs = {}
        for protocol in protocols:
            for batching, (p, rest, grpc_port) in servers.items():   # warm each server's paths
                load(protocol, rest if protocol == 'REST' else grpc_port, bodies[protocol], 4, 1.0, p.pid)
            for c in levels:
                for rep in range(reps):
                    for batching in ((False, True) if rep % 2 == 0 else (True, False)):
                        p, rest, grpc_port = servers[batching]
                        r = load(protocol, rest if protocol == 'REST' else grpc_port, bodies[protocol], c, seconds, p.pid)
                        if r['sample']: check_sample(protocol, r['sample'], results['in_process']['expected'])
                        runs.setdefault((batching, protocol, c), []).append(r)
        for (batching, protocol, c), rs in runs.items(): results[f"{'batch' if batching else 'nobatch'}/{protocol}/{c}"] = median_run(rs)
    finally:
        for p, _, _ in servers.values(): p.terminate(); p.wait(30)      # by pid
    ceilings = {proto: ceiling(proto, bodies[proto], seconds) for proto in protocols}
    ip = results['in_process']
    table = [('in-process, serving_default, 1 row', f"{ip['rps']:,.0f}", '', f"{ip['p50_ms']:.2f}", f"{ip['p99_ms']:.2f}", '', '', '', ''),
             ('in-process, serving_default, 64 rows (rows/s)', f"{in64['rps']:,.0f}", '', f"{in64['p50_ms']:.2f}", f"{in64['p99_ms']:.2f}", '', '', '', '')]
    row = lambda name, r: (name, f"{r['rps']:,.0f}", ' '.join(f"{x:,.0f}" for x in r.get('reps_rps', [])), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                           f"{r['requests']:,}", str(r['errors']), f"{r['server_cpu_us']:,.0f}", f"{r['load_cpu_us']:,.0f}")
    for key, r in results.items():
        if key == 'in_process': continue
        b, proto, c = key.split('/')
        table.append(row(f"{proto}, batching {'on' if b == 'batch' else 'off'}, concurrency {c}", r))
    for proto, r in ceilings.items(): table.append(row(f"{proto}, empty handler (ceiling), concurrency 64", r))
    print(f"serve_bench: {'quick' if args.quick else 'full'} run, {reps} x {seconds:.0f} s per measurement, batching off/on alternating; "
          f"library {lib_version()}; {os.cpu_count()} CPUs, load average {load0[0]:.2f} at the start; server event loop "
          f"{'uvloop' if importlib.util.find_spec('uvloop') else 'asyncio'}; batching: max_batch_size 64, batch_timeout_micros "
          f"{args.batch_timeout_micros}, num_batch_threads {args.batch_threads}")
    print_table(('measurement (median repetition)', 'req/s', 'each repetition', 'p50 ms', 'p99 ms', 'requests', 'errors',
                 'server CPU us/req', 'load CPU us/req'), table)
    top = max(levels)
    fig = {'quick': args.quick, 'batch_timeout_micros': args.batch_timeout_micros, 'num_batch_threads': args.batch_threads, 'library': lib_version(), 'seconds': seconds, 'reps': reps, 'in_process_rps': round(ip['rps'], 1),
           'in_process_p50_ms': round(ip['p50_ms'], 3), 'in_process_64_rows_p50_ms': round(in64['p50_ms'], 3)}
    print()
    for proto in protocols:
        on_runs, off_runs = runs[(True, proto, top)], runs[(False, proto, top)]
        pairs = [a['rps'] / b['rps'] if b['rps'] else float('nan') for a, b in zip(on_runs, off_runs)]
        ratio = statistics.median(pairs)
        one = results[f'nobatch/{proto}/1']
        overhead = one['p50_ms'] - ip['p50_ms']
        cpu_on, cpu_off = results[f'batch/{proto}/{top}']['server_cpu_us'], results[f'nobatch/{proto}/{top}']['server_cpu_us']
        ceil = ceilings[proto]['rps'] / results[f'nobatch/{proto}/{top}']['rps']
        print(f"{proto}: batching on/off at concurrency {top}: {ratio:.2f}x, median of {', '.join(f'{x:.2f}' for x in pairs)} "
              f"(target >= 5x: {'PASS' if ratio >= 5 else 'FAIL'}); an empty handler carries {ceil:.1f}x the unbatched throughput here; "
              f"overhead over in-process at concurrency 1: +{overhead:.2f} ms p50; server CPU per request {cpu_off:,.0f} us off, {cpu_on:,.0f} us on")
        fig |= {f'{proto.lower()}_batching_speedup_c{top}': round(ratio, 2), f'{proto.lower()}_speedup_reps': [round(x, 2) for x in pairs],
                f'{proto.lower()}_overhead_ms_p50': round(overhead, 3), f'{proto.lower()}_empty_handler_rps': round(ceilings[proto]['rps'], 1)}
        for k, r in results.items():
            if f'/{proto}/' in k:
                name = k.replace('/', '_').lower()
                fig |= {f'{name}_rps': round(r['rps'], 1), f'{name}_p99_ms': round(r['p99_ms'], 2), f'{name}_server_cpu_us': round(r['server_cpu_us'])}
    fig['wall_s'] = round(time.time() - t_start, 1)
    fig['load_average'] = [round(x, 2) for x in (load0[0], os.getloadavg()[0])]
    print(json.dumps(fig))

if __name__ == '__main__':
    if sys.argv[1:] == ['--load']: print(json.dumps(load_process(json.loads(sys.stdin.read()))))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        main()
