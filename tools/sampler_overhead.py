"""Sampling time per step on the CPU for a tiny network: the sampler loop of `ddpm_nb.sample` before the Denoiser
refactor (read from git at commit d1ce8b1) against the current one, next to the bare network calls, in one run.

    OMP_NUM_THREADS=1 python tools/sampler_overhead.py [--batch 16] [--steps 100] [--reps 15]
"""
import argparse, importlib.util, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import torch

OLD = 'd1ce8b1'

def old_module():
    "ddpm_nb/sample.py as it was at commit OLD, imported as a module of the current package."
    src = subprocess.run(['git', 'show', f'{OLD}:ddpm_nb/sample.py'], capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / 'old_sample.py'
    path.write_text(src.replace('from .', 'from ddpm_nb.'))
    spec = importlib.util.spec_from_file_location('old_sample', path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

def per_step(f, steps: int, reps: int) -> float:
    "Median over `reps` runs of the seconds per step of f()."
    f()                                                               # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); ts.append((time.perf_counter() - t0) / steps)
    return statistics.median(ts)

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--batch', type=int, default=16); p.add_argument('--steps', type=int, default=100)
    p.add_argument('--reps', type=int, default=15)
    a = p.parse_args()
    torch.set_num_threads(1)
    from ddpm_nb.forward import Schedule
    from ddpm_nb.unet import MLPDenoiser
    from ddpm_nb import sample as new
    old = old_module()
    sched = Schedule.from_name('linear', 1000)
    torch.manual_seed(0)
    net = MLPDenoiser(dim=2, hidden=32, layers=1).eval()
    den = new.Denoiser(net, sched)
    x, B, S = torch.randn(a.batch, 2), a.batch, a.steps
    ts = [int(t) for t in new.timesteps(sched, S)]
    def bare():
        with torch.no_grad():
            for t in ts: net(x, torch.full((B,), t, dtype=torch.long))
    rows = [('bare network calls', per_step(bare, S, a.reps), None)]
    for smp in ('ddim', 'dpm++2m', 'unipc'):
        t_old = per_step(lambda: old.sample(net, sched, (B, 2), smp, S, torch.Generator().manual_seed(0), progress=False), S, a.reps)
        t_new = per_step(lambda: new.sample(den, (B, 2), smp, S, seed=0), S, a.reps)
        rows += [(f'{smp}: before', t_old, None), (f'{smp}: after', t_new, t_old / t_new)]
    base = rows[0][1]
    print(f"tiny MLP (hidden 32, 1 block), batch {B}, {S} steps, 1 thread, median of {a.reps} runs")
    print(f"{'':22s} {'us/step':>9s} {'overhead us':>12s} {'before/after':>13s}")
    for name, t, ratio in rows:
        print(f"{name:22s} {t * 1e6:9.1f} {(t - base) * 1e6:12.1f} {'' if ratio is None else f'{ratio:12.2f}x'}")

if __name__ == '__main__': main()
