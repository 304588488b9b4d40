"Several processes (and threads) committing and merging on one embedded lake at once: no lost update, nothing torn."
import json, select, subprocess, sys, textwrap, threading, time
from collections import Counter
from pathlib import Path
import pytest
from mlinfra_nb.lake.core import Lake
from mlinfra_nb.workspace import Conflict

N = 8  # cycles per worker

# A worker process: waits for the 'go' file so all start together, then works and prints a JSON report.
WORKER = textwrap.dedent('''
    import json, os, random, sys, time
    from mlinfra_nb.lake.core import Lake
    from mlinfra_nb.workspace import Conflict, InvalidInput
    root, role, name, n, go = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    lake = Lake(root, user=name); repo = lake.repository('demo')
    rng = random.Random(name)
    print('ready', flush=True)
    while not os.path.exists(go): time.sleep(0.002)
    rep = {'commits': [], 'merges': [], 'pulls': [], 'conflicts': 0, 'puts': 0, 'resets': 0}
    if role == 'branch':   # work on its own branch, merge into main after each commit
        for i in range(n):
            repo.put_many(name, {f'{name}/{i}/x': f'{name} {i} x'.encode(), f'{name}/{i}/y': f'{name} {i} y'.encode() * 50,
                                 'shared/last': f'{name} {i}'.encode()}); rep['puts'] += 1
            rep['commits'].append(repo.commit(name, f'{name} {i}').id)
            rep['merges'].append(repo.merge(name, into='main', strategy='source-wins').id)   # shared/last may conflict
            if i % 3 == 2:     # now and then take in the others' work too
                try: rep['pulls'].append(repo.merge('main', into=name, strategy='dest-wins').id)
                except InvalidInput as e: assert 'nothing to merge' in str(e), e
    elif role == 'cas':    # read-modify-write of one counter on a shared branch, guarded by expected_head
        for i in range(n):
            while True:
                head = repo.head('opt')
                value = int(repo.get(head.id, 'opt/counter'))
                time.sleep(rng.uniform(0, 0.01))   # others get to move the branch meanwhile
                with lake.session():              # stage + commit as one step, so staging is never shared
                    repo.put_many('opt', {'opt/counter': b'%d' % (value + 1), f'opt/{name}/{i}': f'{name} {i}'.encode()}); rep['puts'] += 1
                    try: c = repo.commit('opt', f'{name} {i}: {value + 1}', expected_head=head.id)
                    except Conflict as e:
                        assert 'moved' in str(e); rep['conflicts'] += 1
                        repo.reset('opt'); rep['resets'] += 1
                        continue
                rep['commits'].append(c.id); break
    print(json.dumps(rep), flush=True)
''')


def run_workers(tmp_path:Path, env:dict, specs:list)->dict:
    "Start one process per (role, name), let them go at once, return their reports by name."
    script, go = tmp_path/'worker.py', tmp_path/'go'
    script.write_text(WORKER)
    procs = {name: subprocess.Popen([sys.executable, str(script), str(tmp_path/'lake'), role, name, str(N), str(go)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path) for role, name in specs}
    try:
        for name, p in procs.items():
            ready, _, _ = select.select([p.stdout], [], [], 60)
            assert ready and p.stdout.readline() == b'ready\n', f'{name} did not start'
        go.touch()
        reports = {}
        for name, p in procs.items():
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, f'{name} failed:\n{err.decode()[-3000:]}'
            reports[name] = json.loads(out.decode().strip().splitlines()[-1])
        return reports
    finally:
        for p in procs.values():
            if p.poll() is None: p.kill(); p.wait()


def audit_rows(lake:Lake)->list:
    return [dict(r, detail=json.loads(r['detail'])) for _, r in lake.audit(limit=1_000_000).iterrows()]


def setup_lake(root:Path)->Lake:
    lake = Lake(root, user='setup'); repo = lake.create_repository('demo')
    repo.put_many('main', {'opt/counter': b'0', 'shared/last': b'setup'}); repo.commit('main', 'start')
    for b in ('wa', 'wb', 'wc', 'opt'): repo.create_branch(b, 'main')
    lake.store.close()
    return lake


def check_branch_workers(repo, reports:dict, names:list):
    main_log = {c.id: c for c in repo.log('main')}
    objects = {o.path for o in repo.list('main')}
    for name in names:
        r = reports[name]
        assert len(r['commits']) == len(r['merges']) == N
        assert set(r['commits']) <= set(main_log) and set(r['merges']) <= set(main_log), f'{name} commits lost from main'
        assert set(r['commits']) <= {c.id for c in repo.log(name)}
        for i in range(N):   # every merged object is on main, with the content its writer committed
            assert repo.get('main', f'{name}/{i}/x') == f'{name} {i} x'.encode()
            assert repo.get('main', f'{name}/{i}/y') == f'{name} {i} y'.encode() * 50
    assert objects == {'opt/counter', 'shared/last'} | {f'{n}/{i}/{k}' for n in names for i in range(N) for k in 'xy'}
    # the last merge into main decided shared/last, with source-wins
    last_merge = repo.head('main')
    winner = [n for n in names if last_merge.id in reports[n]['merges']]
    assert winner and repo.get('main', 'shared/last') == f'{winner[0]} {N - 1}'.encode()
    assert repo.uncommitted('main') == []


def check_cas_workers(repo, reports:dict, names:list):
    total = sum(len(reports[n]['commits']) for n in names)
    assert total == N * len(names)
    assert repo.get('opt', 'opt/counter') == b'%d' % total          # no lost update
    log = repo.log('opt')
    ids = [c.id for c in log]
    for n in names: assert set(reports[n]['commits']) <= set(ids), f'{n}: a reported commit is not in the history of opt'
    values = [int(c.message.rsplit(': ', 1)[1]) for c in log if ': ' in c.message]
    assert values == list(range(total, 0, -1))                       # a linear chain: each increment committed once, in order
    assert all(len(c.parents) == 1 for c in log[:total])
    for n in names:
        for i in range(N): assert repo.get('opt', f'opt/{n}/{i}') == f'{n} {i}'.encode()
    assert repo.uncommitted('opt') == []


def check_audit(lake:Lake, reports:dict):
    rows = audit_rows(lake)
    for name, r in reports.items():
        mine = [x for x in rows if x['actor'] == name]
        acts = Counter(x['action'] for x in mine)
        assert acts['put'] == r['puts'] and acts['reset'] == r['resets'], (name, acts, r)
        assert acts['merge'] == len(r['merges']) + len(r['pulls']), (name, acts)
        assert sorted(x['detail']['commit'] for x in mine if x['action'] == 'commit') == sorted(r['commits'])
        assert sorted(x['detail']['commit'] for x in mine if x['action'] == 'merge') == sorted(r['merges'] + r['pulls'])


def test_processes_commit_merge_and_cas_concurrently(tmp_path, clean_env):
    lake = setup_lake(tmp_path/'lake')
    specs = [('branch', 'wa'), ('branch', 'wb'), ('branch', 'wc'), ('cas', 'ca'), ('cas', 'cb')]
    reports = run_workers(tmp_path, clean_env, specs)
    try:
        repo = lake.repository('demo')
        check_branch_workers(repo, reports, ['wa', 'wb', 'wc'])
        check_cas_workers(repo, reports, ['ca', 'cb'])
        check_audit(lake, reports)
        # the whole history stays readable once the dust settles
        for c in repo.log('main'): repo.list(c.id)
        assert lake.gc(grace=0)['objects'] == 0
    finally: lake.store.close()


def test_expected_head_refuses_a_moved_branch(tmp_path):
    a, b = Lake(tmp_path/'lake', user='a'), Lake(tmp_path/'lake', user='b')
    try:
        ra = a.create_repository('demo'); rb = b.repository('demo')
        seen = ra.head('main')
        rb.put('main', 'x', b'from b'); cb = rb.commit('main', 'b wins', expected_head=seen.id)
        audit_before = len(a.audit(limit=10_000))
        ra.put('main', 'x', b'from a')
        with pytest.raises(Conflict, match=rf"branch 'main' moved: its head is {cb.id[:12]}, not the expected {seen.id[:12]}; look again and retry"):
            ra.commit('main', 'a loses', expected_head=seen.id)
        assert ra.head('main').id == cb.id and len(a.audit(limit=10_000)) == audit_before + 1   # only the put
        assert [c.path for c in ra.uncommitted('main')] == ['x']   # the loser's staging is still there to retry
        assert ra.commit('main', 'a retries', expected_head=cb.id[:12]).parents == (cb.id,)
    finally: a.store.close(); b.store.close()


def test_busy_process_does_not_starve_another(tmp_path, clean_env):
    "A process hammering the lake must let another process in within a bounded time."
    lake = setup_lake(tmp_path/'lake')
    hog = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f'''
        import time
        from mlinfra_nb.lake.core import Lake
        lake = Lake({str(tmp_path/'lake')!r}, user='hog'); repo = lake.repository('demo')
        print('ready', flush=True)
        end = time.monotonic() + 120                   # outlives the test on any machine; killed at its end
        while time.monotonic() < end: repo.list('main'); repo.head('main')
    ''')], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env, cwd=tmp_path)
    try:
        ready, _, _ = select.select([hog.stdout], [], [], 60)
        assert ready and hog.stdout.readline() == b'ready\n'
        time.sleep(0.3)
        repo, waits = lake.repository('demo'), []
        lake.store.close()
        for i in range(15):
            t = time.monotonic(); repo.head('main'); waits.append(time.monotonic() - t)
            lake.store.close(); time.sleep(0.05)
        assert max(waits) < 1.0, f'waited up to {max(waits):.2f}s for the lake: {[round(w, 3) for w in waits]}'
        assert hog.poll() is None, 'the hog finished early; the test measured nothing'
    finally:
        hog.kill(); hog.wait(); lake.store.close()


def test_threads_share_a_lake_and_separate_lakes(tmp_path):
    "Threads in one process: some share one Lake object, others have their own Lake on the same root."
    setup_lake(tmp_path/'lake')
    shared = Lake(tmp_path/'lake', user='shared')
    own = {n: Lake(tmp_path/'lake', user=n) for n in ('ta', 'tb')}
    reports, errors = {}, []

    def brancher(name, lake):
        repo, r = lake.repository('demo'), {'commits': [], 'merges': []}
        for i in range(N):
            repo.put_many(name, {f'{name}/{i}/x': f'{name} {i} x'.encode(), f'{name}/{i}/y': f'{name} {i} y'.encode() * 50,
                                 'shared/last': f'{name} {i}'.encode()})
            r['commits'].append(repo.commit(name, f'{name} {i}').id)
            r['merges'].append(repo.merge(name, into='main', strategy='source-wins').id)
        reports[name] = r

    def casser(name, lake):
        repo, r = lake.repository('demo'), {'commits': [], 'conflicts': 0}
        for i in range(N):
            while True:
                head = repo.head('opt'); value = int(repo.get(head.id, 'opt/counter')); time.sleep(0.002)
                with lake.session():
                    repo.put_many('opt', {'opt/counter': b'%d' % (value + 1), f'opt/{name}/{i}': f'{name} {i}'.encode()})
                    try: r['commits'].append(repo.commit('opt', f'{name} {i}: {value + 1}', expected_head=head.id).id); break
                    except Conflict: r['conflicts'] += 1; repo.reset('opt')
        reports[name] = r

    def guard(fn, *a):
        try: fn(*a)
        except BaseException as e: errors.append((a[0], repr(e)))

    threads = [threading.Thread(target=guard, args=(brancher, 'wa', shared)), threading.Thread(target=guard, args=(brancher, 'wb', shared)),
               threading.Thread(target=guard, args=(brancher, 'wc', own['ta'])),
               threading.Thread(target=guard, args=(casser, 'ca', shared)), threading.Thread(target=guard, args=(casser, 'cb', own['tb']))]
    for t in threads: t.start()
    for t in threads: t.join(120)
    try:
        assert not any(t.is_alive() for t in threads), 'a thread is stuck (deadlock?)'
        assert not errors, errors
        checker = Lake(tmp_path/'lake', user='checker')
        repo = checker.repository('demo')
        check_branch_workers(repo, {n: reports[n] for n in ('wa', 'wb', 'wc')}, ['wa', 'wb', 'wc'])
        check_cas_workers(repo, reports, ['ca', 'cb'])
        commits = {x['detail']['commit'] for x in audit_rows(checker) if x['action'] in ('commit', 'merge')}
        for r in reports.values(): assert set(r['commits']) | set(r.get('merges', [])) <= commits
        checker.store.close()
    finally:
        for lk in (shared, *own.values()): lk.store.close()
