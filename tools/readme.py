"""Render `nbs/index.ipynb` as README.md, or check that README.md is in sync.

Quarto (nbdev's own README route) cannot be installed on our machines, so this
renders the notebook with nbformat: markdown cells as they are, code cells as
```python blocks without their `#|` directives, and their text outputs below.
Cells marked `#| hide` are left out, as Quarto would.

    python tools/readme.py          # write README.md
    python tools/readme.py --check  # exit 1 when README.md differs
"""
import re, sys
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parent.parent
NB, README = ROOT/'nbs'/'index.ipynb', ROOT/'README.md'
HEADER = '<!-- generated from nbs/index.ipynb by tools/readme.py; edit the notebook, not this file -->\n\n'
_directive = re.compile(r'^\s*#\|\s*(.*)$')

def _directives(src):
    return [m.group(1).strip() for l in src.splitlines() if (m := _directive.match(l))]

def _outputs(cell):
    out = []
    for o in cell.get('outputs', []):
        if o.output_type == 'stream': out.append(o.text)
        elif o.output_type in ('execute_result', 'display_data') and 'text/plain' in o.get('data', {}):
            out.append(o.data['text/plain'])
    return ''.join(s if s.endswith('\n') else s+'\n' for s in out)

def render(nb_path=NB):
    "README text for the notebook at `nb_path`."
    nb = nbformat.read(nb_path, as_version=4)
    parts = []
    for cell in nb.cells:
        src = cell.source
        if cell.cell_type == 'markdown':
            parts.append(src.strip()+'\n')
            continue
        if cell.cell_type != 'code': continue
        ds = _directives(src)
        if any(d in ('hide', 'include: false') for d in ds): continue
        code = '\n'.join(l for l in src.splitlines() if not _directive.match(l)).strip()
        if code and 'echo: false' not in ds: parts.append(f'```python\n{code}\n```\n')
        if (out := _outputs(cell)): parts.append(f'```\n{out}```\n')
    return HEADER + '\n'.join(parts)

if __name__ == '__main__':
    text = render()
    if '--check' in sys.argv[1:]:
        if README.read_text(encoding='utf-8') != text if README.exists() else True:
            sys.exit('README.md is out of sync with nbs/index.ipynb: run `python tools/readme.py`')
        print('README.md is in sync with nbs/index.ipynb')
    else:
        README.write_text(text, encoding='utf-8')
        print(f'wrote {README.relative_to(ROOT)}')
