"""Crash test of ddpm_nb_train: kill -9 at random moments (some while a checkpoint is being written), resume, compare.

1. An uninterrupted reference run: `ddpm_nb_train --preset tiny --steps N --ckpt_every K`.
2. The same run killed with SIGKILL again and again: half of the kills at a random moment, half the instant a
   checkpoint's temporary file appears (a kill in the middle of a checkpoint write); after each kill the run is
   continued with `--resume` (or started again when it died before its first checkpoint).
3. The two final checkpoints compared bit for bit: step, weights, EMA, optimiser state, torch's RNG states, the data
   order, the loss history (not Python's and NumPy's global RNG states, which training never uses and nothing seeds).
   No temporary file may be left in the run folder.

    OMP_NUM_THREADS=1 python tools/crash_test.py                    # 10 kills, 60 steps (a few minutes on a CPU)
    python tools/crash_test.py --kills 3 --steps 16 --ckpt_every 1  # the short version CI runs (tests/test_crash.py)

Prints one line per kill and `survived K of K kills; resumed run bit-identical to the uninterrupted one`; exits 1
otherwise. Needs Fashion-MNIST locally (apt-get install dataset-fashion-mnist, or DDPM_NB_DATA).
"""
import argparse, os, random, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_cmd(out_dir: Path, steps: int, ckpt_every: int, resume: bool) -> list:
    return ([sys.executable, '-m', 'ddpm_nb.cli', 'train', '--preset', 'tiny', '--device', 'cpu', '--steps', str(steps),
             '--ckpt_every', str(ckpt_every), '--n_samples', '4', '--no_progress', '--out_dir', str(out_dir)]
            + (['--resume'] if resume else []))


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    e['PYTHONPATH'] = str(ROOT) + (os.pathsep + e['PYTHONPATH'] if e.get('PYTHONPATH') else '')
    return e


def run_to_end(out_dir: Path, steps: int, ckpt_every: int, resume: bool, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(out_dir, steps, ckpt_every, resume), capture_output=True, text=True, env=env(),
                          cwd=ROOT, timeout=timeout)


def tmp_files(out_dir: Path, pid: int = None) -> list:
    "Temporary files in the run folder (of process `pid` only, if given)."
    pat = f'.*.{pid}.tmp' if pid else '.*.tmp'
    return sorted(p.name for p in out_dir.glob(pat)) if out_dir.is_dir() else []


def kill_once(out_dir: Path, steps: int, ckpt_every: int, mode: str, max_wait: float, rng: random.Random) -> dict:
    "Start (or resume) the run, SIGKILL it at a random moment or during a checkpoint write; what happened."
    resume = (out_dir / 'checkpoint.pt').is_file()
    p = subprocess.Popen(train_cmd(out_dir, steps, ckpt_every, resume), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=env(), cwd=ROOT, start_new_session=True)
    t0, deadline, during_write = time.time(), time.time() + (rng.uniform(0.3, 1.0) * max_wait), False
    while p.poll() is None:
        if mode == 'write' and tmp_files(out_dir, p.pid):
            during_write = True; break
        if time.time() >= deadline and mode == 'random': break
        if time.time() - t0 > 3 * max_wait: break                # no write seen in time: kill anyway
        time.sleep(0.002)
    if p.poll() is not None:                                       # finished (or failed) before the kill
        err = p.stderr.read().decode(errors='replace')
        return dict(killed=False, rc=p.returncode, err=err, resume=resume)
    during_write = during_write or bool(tmp_files(out_dir, p.pid))
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    return dict(killed=True, during_write=during_write, at=time.time() - t0, resume=resume)


def compare(a: Path, b: Path) -> list:
    "Differences between two checkpoints, entry by entry, bit for bit."
    import torch
    x, y = (torch.load(p, map_location='cpu', weights_only=True) for p in (a, b))
    diffs = []
    def walk(u, v, where):
        if isinstance(u, torch.Tensor) or isinstance(v, torch.Tensor):
            if not (isinstance(u, torch.Tensor) and isinstance(v, torch.Tensor) and u.dtype == v.dtype and u.shape == v.shape
                    and torch.equal(u, v)): diffs.append(where)
        elif isinstance(u, dict) and isinstance(v, dict):
            if set(u) != set(v): diffs.append(f'{where} keys {sorted(set(u) ^ set(v), key=str)[:5]}')
            for k in set(u) & set(v): walk(u[k], v[k], f'{where}.{k}')
        elif isinstance(u, (list, tuple)) and isinstance(v, (list, tuple)):
            if len(u) != len(v): diffs.append(f'{where} length {len(u)} != {len(v)}')
            else:
                for i, (p, q) in enumerate(zip(u, v)): walk(p, q, f'{where}[{i}]')
        elif u != v and not (isinstance(u, float) and isinstance(v, float) and u != u and v != v): diffs.append(where)
    skip = {'meta', 'config'}          # where the files differ by design: out_dir paths, the resumed run's notes
    for c in (x, y):                   # Python's and NumPy's global RNGs: training never draws from them and nothing seeds
        for st in c.get('rng', []):    # them, so each process starts them from the OS; torch's generators are compared
            if isinstance(st, dict) and isinstance(st.get('rng'), dict): st['rng'].pop('python', None); st['rng'].pop('numpy', None)
    walk({k: v for k, v in x.items() if k not in skip}, {k: v for k, v in y.items() if k not in skip}, 'checkpoint')
    cx, cy = (dict(c.get('config', {})) for c in (x, y))
    for c in (cx, cy): c.pop('out_dir', None)
    if cx != cy: diffs.append(f'config {sorted(k for k in cx if cx.get(k) != cy.get(k))}')
    return diffs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--kills', type=int, default=10, help='how many times to kill the run (default: %(default)s)')
    ap.add_argument('--steps', type=int, default=60, help='training steps of the run (default: %(default)s)')
    ap.add_argument('--ckpt_every', type=int, default=2, help='steps between checkpoints (default: %(default)s)')
    ap.add_argument('--seed', type=int, default=0, help='seed of the kill times (default: %(default)s)')
    ap.add_argument('--keep', action='store_true', help='keep the run folders (printed)')
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix='ddpm_nb_crash_'))
    try:
        t0 = time.time()
        r = run_to_end(work / 'reference', a.steps, a.ckpt_every, resume=False)
        if r.returncode != 0: print(f'the reference run failed: {r.stderr.strip()[-500:]}'); return 1
        ref_s = time.time() - t0
        print(f'reference: {a.steps} steps in {ref_s:.1f} s (checkpoint every {a.ckpt_every})', flush=True)
        out, survived, kills, during, attempts = work / 'crashed', 0, 0, 0, 0
        while kills < a.kills and attempts < 4 * a.kills:
            attempts += 1
            mode = 'write' if kills % 2 else 'random'
            k = kill_once(out, a.steps, a.ckpt_every, mode, max_wait=ref_s, rng=rng)
            if not k['killed']:
                if k['rc'] != 0: print(f"  the run failed without a kill (exit {k['rc']}): {k['err'].strip()[-300:]}"); return 1
                print('  the run finished before the kill: starting it again from scratch to place the remaining kills')
                shutil.rmtree(out); continue
            kills += 1; during += k['during_write']
            print(f"  kill {kills}: SIGKILL after {k['at']:.1f} s ({'during a checkpoint write' if k['during_write'] else 'at a random moment'}"
                  f"{', a resumed process' if k['resume'] else ''}); temporary files left: {len(tmp_files(out))}", flush=True)
        # finish: resume until done (a kill before the first checkpoint means a fresh start)
        r = run_to_end(out, a.steps, a.ckpt_every, resume=(out / 'checkpoint.pt').is_file())
        if r.returncode != 0: print(f'resuming after the last kill failed (exit {r.returncode}): {r.stderr.strip()[-500:]}'); return 1
        left = tmp_files(out)
        diffs = compare(work / 'reference' / 'checkpoint.pt', out / 'checkpoint.pt')
        survived = kills if not diffs and not left else 0
        if left: print(f'temporary files left in the run folder after the resumed run: {left}')
        if diffs:
            top = sorted({d.split('.')[1].split('[')[0] if '.' in d else d for d in diffs})
            print(f'the resumed run differs from the uninterrupted one in {len(diffs)} entries, under {top}: {diffs[:6]}')
        ok = not diffs and not left and kills == a.kills
        print(f"survived {survived} of {kills} kills ({during} during a checkpoint write); resumed run "
              f"{'bit-identical to' if not diffs else 'DIFFERENT from'} the uninterrupted one; {time.time() - t0:.0f} s")
        return 0 if ok else 1
    finally:
        if a.keep: print(f'run folders kept in {work}')
        else: shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
