"""Run every chapter as a reader does in Jupyter ("Run All"), on the CPU, and fail on any error or any slow cell.

Unlike `nbdev_test`, this executes each notebook with a Jupyter kernel exactly as it is: cells flagged `#| slow` and
`#| cuda` run too (a `#| cuda` cell must print one line when there is no GPU; a long cell must skip itself while the
notebook's `RUN_LONG` flag is off, its default). `IN_TEST` is removed from the kernel's environment (with it set the
long cells would run) and CUDA is hidden, so a GPU machine checks the CPU path as well. Each notebook is executed
from a copy in memory, in its own folder (relative paths work as in Jupyter); the file is never written. The last
cell of each chapter, `nbdev.nbdev_export()`, is a maintainer's step and is not run (it would rewrite the package).

    OMP_NUM_THREADS=1 python tools/run_notebooks.py                 # every nbs/*.ipynb except _*.ipynb
    python tools/run_notebooks.py nbs/04_score.ipynb --cell-timeout 300 --jobs 2

Prints one row per notebook (status, wall time, cells, the slowest cell) and a closing `N passed, N failed` line;
exits 1 if any notebook failed.
"""
import argparse, json, os, re, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')


def _maintainer_only(src: str) -> bool:
    "Cells that rewrite the package (`nbdev_export()`): a maintainer's step, not a reader's."
    return re.search(r'\bnbdev_export\(\)', src) is not None


def _cell_seconds(cell) -> float:
    ex = cell.get('metadata', {}).get('execution', {})
    a, b = ex.get('iopub.execute_input') or ex.get('shell.execute_reply.started'), ex.get('shell.execute_reply')
    if not (a and b): return 0.0
    from datetime import datetime
    f = lambda s: datetime.fromisoformat(s.replace('Z', '+00:00'))
    return (f(b) - f(a)).total_seconds()


def run_one(path: Path, cell_timeout: int) -> dict:
    "Execute one notebook in this process; returns a dict (ok, seconds, cells, slowest, error)."
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError
    nb = nbformat.read(path, as_version=4)
    skipped = 0
    for c in nb.cells:
        if c.cell_type == 'code' and _maintainer_only(c.source): c.source, skipped = '', skipped + 1
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name='python3', record_timing=True,
                            resources={'metadata': {'path': str(path.parent)}})
    t0, err = time.time(), None
    try: client.execute()
    except CellTimeoutError as e: err = f'a cell ran for more than {cell_timeout} s (--cell-timeout): {str(e).splitlines()[0][:200]}'
    except CellExecutionError as e:
        lines = [l for l in str(e).splitlines() if l.strip()]
        err = 'error: ' + (ANSI.sub('', lines[-1])[:300] if lines else type(e).__name__)
    except Exception as e: err = f'{type(e).__name__}: {str(e)[:300]}'
    secs = time.time() - t0
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == 'code' and c.source.strip()]
    times = [(_cell_seconds(c), i) for i, c in code]
    slow_s, slow_i = max(times) if times else (0.0, -1)
    failed_at = next((i for i, c in code if any(o.get('output_type') == 'error' for o in c.get('outputs', []))), None)
    if err and failed_at is not None: err = f'cell {failed_at}: {err}'
    return dict(ok=err is None, seconds=round(secs, 1), cells=len(code), slowest=round(slow_s, 1), slowest_cell=slow_i,
                error=err, skipped=skipped)


def _child_env() -> dict:
    env = dict(os.environ)
    env.pop('IN_TEST', None)                              # with IN_TEST the long cells would run (nbdev_test's path)
    env['CUDA_VISIBLE_DEVICES'] = ''                      # the CPU path, even on a GPU machine
    env.setdefault('OMP_NUM_THREADS', '1'); env.setdefault('MKL_NUM_THREADS', '1')
    env.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    env['PYTHONPATH'] = str(ROOT) + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    return env


def run_in_subprocess(path: Path, cell_timeout: int) -> dict:
    "One notebook in a fresh process (its own kernel), so that --jobs runs notebooks side by side."
    p = subprocess.run([sys.executable, __file__, '--one', str(path), '--cell-timeout', str(cell_timeout)],
                       capture_output=True, text=True, env=_child_env(), cwd=ROOT)
    last = [l for l in p.stdout.splitlines() if l.startswith('{')]
    if p.returncode != 0 or not last:
        return dict(ok=False, seconds=0, cells=0, slowest=0, slowest_cell=-1, skipped=0,
                    error=f'runner crashed (exit {p.returncode}): {(p.stderr.strip().splitlines() or ["?"])[-1][:300]}')
    return json.loads(last[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('paths', nargs='*', help='notebooks (default: nbs/*.ipynb except _*)')
    ap.add_argument('--cell-timeout', type=int, default=240, help='seconds any one cell may take (default: %(default)s)')
    ap.add_argument('--jobs', type=int, default=1, help='notebooks run side by side (default: %(default)s)')
    ap.add_argument('--one', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(run_one(Path(a.one).resolve(), a.cell_timeout))); return 0
    if a.jobs < 1 or a.cell_timeout < 1: ap.error('--jobs and --cell-timeout must be at least 1')
    paths = [Path(p) for p in a.paths] or sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing: ap.error(f'no such notebook: {", ".join(missing)}')
    if not paths: print('no notebooks found: nothing was run', file=sys.stderr); return 1
    t0 = time.time()
    print(f'running {len(paths)} notebooks with a Jupyter kernel on the CPU (RUN_LONG off, --cell-timeout {a.cell_timeout} s, --jobs {a.jobs})', flush=True)
    def one(p):
        r = run_in_subprocess(p.resolve(), a.cell_timeout)
        print(f"  {'ok  ' if r['ok'] else 'FAIL'} {p.name:22s} {r['seconds']:7.1f} s" + ('' if r['ok'] else f"  {r['error']}"), flush=True)
        return p, r
    with ThreadPoolExecutor(a.jobs) as ex: results = list(ex.map(one, paths))
    print(f"\n{'notebook':22s} {'status':6s} {'time s':>7s} {'cells':>5s} {'slowest cell':>13s}")
    for p, r in results:
        print(f"{p.name:22s} {'ok' if r['ok'] else 'FAILED':6s} {r['seconds']:7.1f} {r['cells']:5d} "
              f"{r['slowest']:7.1f} s (#{r['slowest_cell']})")
    for p, r in results:
        if not r['ok']: print(f"FAILED {p.name}: {r['error']}")
    nf = sum(not r['ok'] for _, r in results)
    print(f"{len(results) - nf} passed, {nf} failed in {time.time() - t0:.0f} s")
    return 1 if nf else 0


if __name__ == '__main__':
    sys.exit(main())
