#!/usr/bin/env python
"""Throughput of the U-Net presets: training (images/s) and sampling (network evaluations and images/s).

    python tools/bench.py                          # every preset, 32x32, batch 128, on the default device
    python tools/bench.py --presets base --device cuda --batch 512 --channels_last on --data device   # the GPU target
    python tools/bench.py --presets small base --device cuda --batch 256
    python tools/bench.py --no-compile --iters 3   # quick
    python tools/bench.py --target --json bench.json   # only the target's configuration (about a minute on a GPU)

Target on one H200: >= 20 000 training images/s for the 16 M-parameter `base` preset at 32x32 (bf16, torch.compile,
channels_last, data on the device); the script says whether a row meets it.

For each preset it times, after warm-up iterations:
  - a training step (forward, loss, backward, AdamW step) in full precision and under autocast
    (bfloat16 on CPU and on GPUs that support it, else float16), with and without torch.compile;
  - a sampling step (one forward pass without gradients), reported as network evaluations per
    second x batch (images/s for one step) and as images/s for a 50-step sampler.
The training step is the package's own `training_loss` (v-prediction, min-SNR-5 weighting, class-conditional with
label dropout when --conditional), with fused AdamW on CUDA. Options per row: autocast (bf16 where supported),
torch.compile, channels_last memory format, and where the data lives (`--data device`: a uint8 copy of a
Fashion-MNIST-sized set on the device, batches gathered and scaled there; `host`: batches copied from pinned
host memory every step). On CUDA it also prints the peak memory of each configuration. Figures go to stdout as a table;
`--json FILE` also writes them to a file. Timings are wall-clock medians over --iters iterations
(on CUDA, synchronised), so run it on a quiet machine.
"""
import argparse, json, platform, statistics, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ddpm_nb.unet import UNET_PRESETS, UNet, count_params  # noqa: E402
from ddpm_nb.train import resolve_device, training_loss  # noqa: E402
from ddpm_nb.forward import Schedule  # noqa: E402

TARGET = dict(preset='base', size=32, img_s=20_000)        # issue target on one H200


def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def _time(fn, device, warmup, iters):
    for _ in range(warmup): fn()
    _sync(device)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter(); fn(); _sync(device); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench_one(preset, device, batch, size, amp_dtype, compiled, warmup, iters, channels_last=False, data='device',
              conditional=False):
    "Training and sampling throughput of one preset in one configuration."
    import dataclasses
    torch.manual_seed(0)
    cfg = UNET_PRESETS[preset]
    if conditional: cfg = dataclasses.replace(cfg, num_classes=10)
    mf = torch.channels_last if channels_last else torch.contiguous_format
    model = UNet(cfg).to(device).to(memory_format=mf)
    net = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **(dict(fused=True) if device.type == 'cuda' else dict(foreach=True)))
    sched = Schedule.from_name('cosine', T=1000).to(device, torch.float32)
    n_set = 60_000
    g = torch.Generator(device).manual_seed(0)
    if data == 'device':                           # the whole set on the device as uint8, batches gathered there
        store = torch.randint(0, 256, (n_set, 1, size, size), dtype=torch.uint8, device=device)
        labels = torch.randint(0, 10, (n_set,), device=device)
        def get_batch():
            idx = torch.randint(0, n_set, (batch,), device=device, generator=g)
            return store[idx].float().div_(127.5).sub_(1).contiguous(memory_format=mf), labels[idx]
    else:                                          # host memory, copied every step
        store = torch.randint(0, 256, (n_set, 1, size, size), dtype=torch.uint8)
        labels = torch.randint(0, 10, (n_set,))
        def get_batch():
            idx = torch.randint(0, n_set, (batch,))
            xb, yb = store[idx], labels[idx]
            if device.type == 'cuda': xb, yb = xb.pin_memory(), yb.pin_memory()
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            return xb.float().div_(127.5).sub_(1).contiguous(memory_format=mf), yb
    x_eval = torch.randn(batch, 1, size, size, device=device).contiguous(memory_format=mf)
    t = torch.randint(0, 1000, (batch,), device=device)
    y_eval = torch.randint(0, 10, (batch,), device=device) if conditional else None

    def train_step():
        x0, y = get_batch()
        loss = training_loss(net, sched, x0, y if conditional else None, pred='v', weighting='min_snr', gamma=5.0,
                             label_dropout=0.2 if conditional else 0.0, null_label=10 if conditional else None,
                             generator=g, amp_dtype=amp_dtype)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

    @torch.no_grad()
    def sample_step():
        with (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else torch.autocast(device.type, enabled=False)):
            net(x_eval, t) if y_eval is None else net(x_eval, t, y_eval)

    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    t_train = _time(train_step, device, warmup, iters)
    mem_train = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else None
    model.eval()
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    t_sample = _time(sample_step, device, warmup, iters)
    mem_sample = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else None
    return dict(preset=preset, params=count_params(model), amp={torch.bfloat16: 'bf16', torch.float16: 'fp16'}.get(amp_dtype, 'fp32'),
                compile=compiled, channels_last=channels_last, data=data, size=size, batch=batch,
                train_img_s=batch / t_train, step_ms=1e3 * t_train,
                eval_img_s=batch / t_sample, img_s_50_steps=batch / t_sample / 50,
                peak_mib_train=mem_train, peak_mib_sample=mem_sample)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--presets', nargs='+', default=list(UNET_PRESETS), choices=list(UNET_PRESETS))
    p.add_argument('--device', default='auto')
    p.add_argument('--batch', type=int, default=None, help='batch size (default 128; 512 with --target)')
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--iters', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--no-compile', action='store_true', help='skip the torch.compile rows')
    p.add_argument('--no-amp', action='store_true', help='skip the autocast rows')
    p.add_argument('--channels_last', choices=['on', 'off', 'both'], default='both', help='channels_last memory format')
    p.add_argument('--data', choices=['device', 'host', 'both'], default='device', help='where the training images live')
    p.add_argument('--conditional', action='store_true', help='class-conditional network (label dropout 0.2)')
    p.add_argument('--json', default=None, help='also write the rows to this file')
    p.add_argument('--target', action='store_true',
                   help="only the target's row: the base preset at 32x32, batch 512 (unless --batch is given), autocast, "
                        "torch.compile, channels_last, data on the device")
    a = p.parse_args(argv)
    if a.batch is None: a.batch = 512 if a.target else 128
    if a.target:
        a.presets, a.size, a.channels_last, a.data = [TARGET['preset']], TARGET['size'], 'on', 'device'
    device = resolve_device(a.device)
    amp = torch.bfloat16 if device.type == 'cpu' or (device.type == 'cuda' and torch.cuda.is_bf16_supported()) else torch.float16
    dev_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads'
    print(f"# ddpm_nb U-Net throughput | device {device} ({dev_name}) | torch {torch.__version__} | batch {a.batch} | {a.size}x{a.size}x1 | median of {a.iters}")
    rows = []
    hdr = f"{'preset':<6} {'params':>10} {'amp':>5} {'compile':>7} {'ch_last':>7} {'data':>6} {'train img/s':>11} {'step ms':>9} {'eval img/s':>10} {'img/s @50 steps':>15} {'peak MiB (train/sample)':>24}"
    print(hdr); print('-' * len(hdr))
    cls = {'on': [True], 'off': [False], 'both': [False, True]}[a.channels_last]
    datas = ['device', 'host'] if a.data == 'both' else [a.data]
    for preset in a.presets:
        for compiled in ([False] if a.no_compile else [True] if a.target else [False, True]):
            for dt in ([None] if a.no_amp else [amp] if a.target else [None, amp]):
                for cl in cls:
                    for data in datas:
                        try:
                            r = bench_one(preset, device, a.batch, a.size, dt, compiled, a.warmup, a.iters, cl, data, a.conditional)
                        except Exception as e:                      # e.g. torch.compile without a working compiler
                            print(f"{preset:<6} {'':>10} {str(dt):>5} {compiled!s:>7} {cl!s:>7} {data:>6}  failed: "
                                  f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}")
                            continue
                        rows.append(r)
                        mem = f"{r['peak_mib_train']:.0f} / {r['peak_mib_sample']:.0f}" if r['peak_mib_train'] is not None else 'n/a (CPU)'
                        hit = ('  <- meets the target' if r['train_img_s'] >= TARGET['img_s'] else '  (target: 20 000)') \
                            if (preset, a.size) == (TARGET['preset'], TARGET['size']) else ''
                        print(f"{r['preset']:<6} {r['params']:>10,} {r['amp']:>5} {compiled!s:>7} {cl!s:>7} {data:>6} {r['train_img_s']:>11.1f} "
                              f"{r['step_ms']:>9.1f} {r['eval_img_s']:>10.1f} {r['img_s_50_steps']:>15.2f} {mem:>24}{hit}", flush=True)
    if a.json: Path(a.json).write_text(json.dumps(dict(device=str(device), name=dev_name, torch=torch.__version__, target=TARGET, rows=rows), indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
