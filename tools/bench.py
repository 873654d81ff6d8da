#!/usr/bin/env python
"""Throughput of the U-Net presets: training (images/s) and sampling (network evaluations and images/s).

    python tools/bench.py                          # every preset, 32x32, batch 128, on the default device
    python tools/bench.py --presets small base --device cuda --batch 256
    python tools/bench.py --no-compile --iters 3   # quick

For each preset it times, after warm-up iterations:
  - a training step (forward, loss, backward, AdamW step) in full precision and under autocast
    (bfloat16 on CPU and on GPUs that support it, else float16), with and without torch.compile;
  - a sampling step (one forward pass without gradients), reported as network evaluations per
    second x batch (images/s for one step) and as images/s for a 50-step sampler.
On CUDA it also prints the peak memory of each configuration. Figures go to stdout as a table;
`--json FILE` also writes them to a file. Timings are wall-clock medians over --iters iterations
(on CUDA, synchronised), so run it on a quiet machine.
"""
import argparse, json, platform, statistics, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ddpm_nb.unet import UNET_PRESETS, UNet, count_params  # noqa: E402
from ddpm_nb.train import resolve_device  # noqa: E402


def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def _time(fn, device, warmup, iters):
    for _ in range(warmup): fn()
    _sync(device)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter(); fn(); _sync(device); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench_one(preset, device, batch, size, amp_dtype, compiled, warmup, iters):
    "Training and sampling throughput of one preset in one configuration."
    torch.manual_seed(0)
    model = UNet(UNET_PRESETS[preset]).to(device)
    net = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    x = torch.randn(batch, 1, size, size, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)

    def train_step():
        with (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else torch.autocast(device.type, enabled=False)):
            out = net(x, t)
        loss = (out.float() - x).pow(2).mean()
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

    @torch.no_grad()
    def sample_step():
        with (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else torch.autocast(device.type, enabled=False)):
            net(x, t)

    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    t_train = _time(train_step, device, warmup, iters)
    mem_train = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else None
    model.eval()
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    t_sample = _time(sample_step, device, warmup, iters)
    mem_sample = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else None
    return dict(preset=preset, params=count_params(model), amp={torch.bfloat16: 'bf16', torch.float16: 'fp16'}.get(amp_dtype, 'fp32'),
                compile=compiled, train_img_s=batch / t_train, step_ms=1e3 * t_train,
                eval_img_s=batch / t_sample, img_s_50_steps=batch / t_sample / 50,
                peak_mib_train=mem_train, peak_mib_sample=mem_sample)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--presets', nargs='+', default=list(UNET_PRESETS), choices=list(UNET_PRESETS))
    p.add_argument('--device', default='auto')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--iters', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--no-compile', action='store_true', help='skip the torch.compile rows')
    p.add_argument('--no-amp', action='store_true', help='skip the autocast rows')
    p.add_argument('--json', default=None, help='also write the rows to this file')
    a = p.parse_args(argv)
    device = resolve_device(a.device)
    amp = torch.bfloat16 if device.type == 'cpu' or (device.type == 'cuda' and torch.cuda.is_bf16_supported()) else torch.float16
    dev_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads'
    print(f"# ddpm_nb U-Net throughput | device {device} ({dev_name}) | torch {torch.__version__} | batch {a.batch} | {a.size}x{a.size}x1 | median of {a.iters}")
    rows = []
    hdr = f"{'preset':<6} {'params':>10} {'amp':>5} {'compile':>7} {'train img/s':>11} {'step ms':>9} {'eval img/s':>10} {'img/s @50 steps':>15} {'peak MiB (train/sample)':>24}"
    print(hdr); print('-' * len(hdr))
    for preset in a.presets:
        for compiled in ([False] if a.no_compile else [False, True]):
            for dt in ([None] if a.no_amp else [None, amp]):
                try:
                    r = bench_one(preset, device, a.batch, a.size, dt, compiled, a.warmup, a.iters)
                except Exception as e:                      # e.g. torch.compile without a working compiler
                    print(f"{preset:<6} {'':>10} {str(dt):>5} {compiled!s:>7}  failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}")
                    continue
                rows.append(r)
                mem = f"{r['peak_mib_train']:.0f} / {r['peak_mib_sample']:.0f}" if r['peak_mib_train'] is not None else 'n/a (CPU)'
                print(f"{r['preset']:<6} {r['params']:>10,} {r['amp']:>5} {compiled!s:>7} {r['train_img_s']:>11.1f} {r['step_ms']:>9.1f} "
                      f"{r['eval_img_s']:>10.1f} {r['img_s_50_steps']:>15.2f} {mem:>24}", flush=True)
    if a.json: Path(a.json).write_text(json.dumps(dict(device=str(device), name=dev_name, torch=torch.__version__, rows=rows), indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
