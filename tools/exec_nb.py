"""Execute notebooks in place, as the book's outputs are produced: every cell in order with a Jupyter kernel, except
cells flagged `#| cuda` (kept as they are when no GPU is present) and `#| eval: false`. Cells flagged `#| slow` run
unless --skip-slow is given, in which case their stored outputs are kept. Progress bars are silenced (TQDM_DISABLE).

    OMP_NUM_THREADS=1 python tools/exec_nb.py nbs/07_sample.ipynb [--skip-slow] [--timeout 1800]
"""
import argparse, os, re, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

def flags(src: str) -> set:
    out = set()
    for line in src.splitlines():
        m = re.match(r'\s*#\|\s*(.*)', line)
        if not m:
            if line.strip(): break
            continue
        out.update(m.group(1).replace(':', ' ').split())
    return out

def run(path: Path, skip_slow: bool, timeout: int):
    import torch
    nb = nbformat.read(path, as_version=4)
    skipped = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != 'code': continue
        f = flags(c.source)
        skip = ('cuda' in f and not torch.cuda.is_available()) or ('eval' in f and 'false' in f) or (skip_slow and 'slow' in f)
        if skip: skipped.append(i); c.metadata['_skip'] = True
    kept = {i: nb.cells[i] for i in skipped}
    for i in skipped: nb.cells[i] = nbformat.v4.new_markdown_cell('')      # placeholders keep the indices
    os.environ.setdefault('TQDM_DISABLE', '1'); os.environ.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    t0 = time.time()
    client.execute()
    for i, c in kept.items(): c.metadata.pop('_skip', None); nb.cells[i] = c
    nbformat.write(nb, path)
    print(f"{path}: executed in {time.time() - t0:.0f} s; kept outputs of {len(skipped)} skipped cells {skipped}")

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('paths', nargs='+'); p.add_argument('--skip-slow', action='store_true'); p.add_argument('--timeout', type=int, default=3600)
    a = p.parse_args()
    for q in a.paths: run(Path(q), a.skip_slow, a.timeout)
