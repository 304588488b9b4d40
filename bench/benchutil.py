"What every benchmark script prints the same way: the library version it measured, and its results table."
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def lib_version()->str:
    "The git commit of the library benchmarked, with '+dirty' when mlinfra_nb/ has uncommitted edits."
    try:
        git = lambda *a: subprocess.run(['git', *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return git('rev-parse', '--short', 'HEAD') + ('+dirty' if git('status', '--porcelain', '--', 'mlinfra_nb') else '')
    except Exception: return 'unknown'

def print_table(head:tuple, rows:list):
    "Print `rows` under `head`, the first column left-aligned and the others right-aligned."
    w = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: '  '.join(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i]) for i, c in enumerate(r))
    print(line(head)); print('  '.join('-' * x for x in w))
    for r in rows: print(line(r))
