"""The tutorials ship with their outputs so readers see them, and `nbdev_clean` (which `tools/check_sync.py` runs)
sets every execution count to null. nbval 0.11 fails any cell that has outputs but no execution count ("Unrun
reference cell has outputs"), even with `--nbval-lax`, where outputs are not compared. Numbering those cells at
collection lets nbval run the tutorials as they are committed."""

def pytest_collection_modifyitems(items):
    for n, item in enumerate(items, 1):
        cell = getattr(item, 'cell', None)   # nbval's cell items carry their notebook cell
        if cell is not None and cell.get('cell_type') == 'code' and cell.get('outputs') and cell.get('execution_count') is None:
            cell['execution_count'] = n
