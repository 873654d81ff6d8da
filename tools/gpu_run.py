#!/usr/bin/env python
"""The GPU edition of chapter 10 as one command: train, evaluate, write the model, figures and a JSON of figures.

    python tools/gpu_run.py --out runs/gpu                       # one H100/H200: about 5 minutes in all
    python tools/gpu_run.py --out runs/gpu --data_root data/fmnist   # Fashion-MNIST's four .gz files in a folder
    python tools/gpu_run.py --out runs/smoke --smoke              # seconds on a CPU: the same code path, tiny sizes (CI)
    python tools/gpu_run.py --out runs/gpu_uncond --no-conditional    # an unconditional network instead
    OUT=back bash tools/gpu_device.sh      # on a remote GPU machine that hands back few files: this run, packed, and the bench

What it does, within a wall-clock budget (`--minutes`, default 5.5; the run ends before 6 minutes):
  1. trains chapter 10's `gpu` run (the 16 M-parameter `base` U-Net, class-conditional with label dropout 0.2,
     v-prediction, min-SNR-5, cosine schedule) with bf16 autocast, torch.compile, channels_last and the whole
     training set kept on the device (no DataLoader). The number of steps is sized to the budget from the
     throughput measured after compilation; the learning rate decays (cosine) over exactly those steps;
  2. saves the EMA model as a `save_pretrained` folder (`OUT/model`: model.safetensors, config.json, README.md)
     and the training state (`OUT/train_state.pt`: weights, EMA, optimiser, step, loss history);
  3. evaluates it with chapter 10's protocol (`evaluate_model`): DDIM, DPM-Solver++(2M), UniPC and iPNDM at
     10 and 20 steps, N = 10 000 samples each (balanced classes), FID and KID against the 10 000 test images on
     chapter 9's classifier features beside the real-versus-real floor at the same N; then `choose_defaults`,
     chapter 10's rule: the best 20-step sampler again with classifier-free guidance at each setting of
     `EVAL_GUIDANCE`, and a second seed for the best 20-step row (guided or not); the null-label (unconditional)
     row; the run's sampling defaults (sampler, spacing, steps, guidance and its interval) are set to the best
     20-step row;
  4. writes `OUT/results.json` (every figure: throughput, timings, rows, headline) and `OUT/figures/*.png`
     (samples by class, loss curve, FID / floor against steps).

It needs torch, torchvision, safetensors, matplotlib and numpy (no nbdev or fastcore, no network). Fashion-MNIST comes from
--data_root, $DDPM_NB_DATA or the Debian package (see ddpm_nb.data.find_fashion_mnist).
"""
import argparse, copy, dataclasses, json, math, os, platform, sys, time
from pathlib import Path

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', required=True, help='output folder (created)')
    p.add_argument('--smoke', action='store_true', help='tiny sizes on any device: seconds on a CPU (CI)')
    p.add_argument('--minutes', type=float, default=None,
                   help='wall-clock budget of the whole command, start-up included (default 5.5; none under --smoke unless given)')
    p.add_argument('--eval_minutes', type=float, default=1.6, help='part of the budget kept for saving and evaluation')
    p.add_argument('--conditional', action=argparse.BooleanOptionalAction, default=True,
                   help='class-conditional network with label dropout (the guidance chapter needs it); --no-conditional: unconditional')
    p.add_argument('--n', type=int, default=10_000, help='samples per evaluated setting')
    p.add_argument('--batch_size', type=int, default=None, help='training batch (default: the preset)')
    p.add_argument('--lr', type=float, default=None, help='peak learning rate (default: the preset)')
    p.add_argument('--max_steps', type=int, default=None, help='upper bound on training steps (default: the preset)')
    p.add_argument('--no_compile', action='store_true', help='skip torch.compile')
    p.add_argument('--amp', choices=['auto', 'bf16', 'fp16', 'none'], default='auto',
                   help='autocast dtype of training and sampling (auto: bf16 on a GPU that supports it, else fp16 with a gradient '
                        'scaler; on a CPU none, but bf16 under --smoke so that the smoke test runs the mixed-precision code path)')
    p.add_argument('--data_root', default=None, help='folder with the four Fashion-MNIST files (.gz or not)')
    p.add_argument('--device', default='auto')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    a = parse(argv)
    out = Path(a.out); (out / 'figures').mkdir(parents=True, exist_ok=True)
    if a.data_root: os.environ['DDPM_NB_DATA'] = str(Path(a.data_root).resolve())   # the evaluation's test images too
    import torch
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from ddpm_nb.forward import Schedule
    from ddpm_nb.unet import UNET_PRESETS, UNet, count_params
    from ddpm_nb.train import TrainConfig, autocast_ctx, ema_decay_at, lr_factor, resolve_amp, resolve_device, training_loss
    from ddpm_nb.data import load_fashion_mnist
    from ddpm_nb.fmnist import (FMNIST_RUNS, _conditional, _w_words, choose_defaults, eval_table, evaluate_model, load_pretrained,
                                save_pretrained, with_defaults)

    device = resolve_device(a.device)
    cuda = device.type == 'cuda'
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    run = FMNIST_RUNS['gpu']
    if a.smoke:
        run = dataclasses.replace(run, unet=_conditional(UNET_PRESETS['tiny']),
                                  train=dataclasses.replace(run.train, steps=30, batch_size=32, warmup_steps=5, ema_decay=0.9, lr=1e-3))
    if not a.conditional: run = dataclasses.replace(run, unet=dataclasses.replace(run.unet, num_classes=None),
                                                     train=dataclasses.replace(run.train, label_dropout=0.0))
    tcfg = dataclasses.replace(run.train, **{k: v for k, v in dict(batch_size=a.batch_size, lr=a.lr).items() if v is not None})
    max_steps = a.max_steps or tcfg.steps
    amp = torch.bfloat16 if a.amp == 'auto' and a.smoke and not cuda else resolve_amp(a.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)   # float16 gradients need loss scaling; bf16 do not
    n_eval = 130 if a.smoke else a.n
    if a.minutes is None and not a.smoke: a.minutes = 5.5
    budget_s = a.minutes * 60 if a.minutes is not None else 1e9   # --smoke alone checks the code path, not the clock
    info = dict(device=torch.cuda.get_device_name(device) if cuda else f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
                torch=torch.__version__, python=platform.python_version(), smoke=a.smoke,
                amp=str(amp).replace('torch.', ''), compile=not a.no_compile, channels_last=True, data_on_device=True,
                budget_minutes=a.minutes)
    print(f"# gpu_run: {info['device']} | torch {torch.__version__} | {'smoke' if a.smoke else 'full'} | budget " + (f"{a.minutes} min" if a.minutes is not None else 'none'), flush=True)

    # --- data, kept on the device as uint8; batches are drawn and scaled there
    imgs, labels = load_fashion_mnist('train', root=a.data_root)
    imgs, labels = imgs.to(device), labels.to(device)
    g = torch.Generator(device).manual_seed(a.seed)

    def batch(bs):
        idx = torch.randint(0, len(imgs), (bs,), device=device, generator=g)
        x = imgs[idx].unsqueeze(1).float().div_(127.5).sub_(1).contiguous(memory_format=torch.channels_last)
        return x, (labels[idx] if run.unet.num_classes else None)

    # --- model, EMA, optimiser
    torch.manual_seed(a.seed)
    model = UNet(run.unet).to(device).to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).float().eval().requires_grad_(False)
    decay = [p for p in model.parameters() if p.ndim >= 2]; no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=tcfg.weight_decay), dict(params=no_decay, weight_decay=0.0)],
                            lr=tcfg.lr, **(dict(fused=True) if cuda else dict(foreach=True)))
    net = model
    if a.smoke and not cuda: info['compile'] = False             # compiling takes a minute on a CPU: the smoke test skips it
    if info['compile']:
        try: net = torch.compile(model)
        except Exception as e: print(f"torch.compile unavailable ({type(e).__name__}); training eagerly", flush=True); info['compile'] = False
    sched = Schedule.from_name(run.schedule, T=run.T).to(device, torch.float32)
    null = run.unet.num_classes
    history = dict(step=[], loss=[])
    losses = []

    def train_step(step, total):
        lr = tcfg.lr * lr_factor(step, tcfg.warmup_steps, total, tcfg.lr_schedule, tcfg.min_lr_ratio)
        for grp in opt.param_groups: grp['lr'] = lr
        x0, y = batch(tcfg.batch_size)
        loss = training_loss(net, sched, x0, y, pred=tcfg.pred, weighting=tcfg.weighting, gamma=tcfg.gamma,
                             label_dropout=tcfg.label_dropout if null else 0.0, null_label=null, generator=g, amp_dtype=amp)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        if torch.isfinite(gn): scaler.step(opt)           # a non-finite gradient skips the update (never non-finite weights)
        scaler.update()
        d = ema_decay_at(step, tcfg.ema_decay, tcfg.ema_warmup)
        torch._foreach_lerp_(list(ema.parameters()), [p.detach().float() for p in model.parameters()], 1 - d)
        losses.append(loss.detach())

    def sync():
        if cuda: torch.cuda.synchronize(device)

    # --- compile and measure: the first steps (compilation) do not count for the throughput
    model.train()
    t0 = time.perf_counter()
    warm = 3 if a.smoke else 20
    try: train_step(0, max_steps)                          # torch.compile compiles here, at the first call, and may fail here
    except Exception as e:
        if net is model: raise
        print(f"torch.compile failed at the first step ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
              "training eagerly", flush=True)
        net, info['compile'], info['compile_error'] = model, False, f"{type(e).__name__}: {str(e)[:500]}"
        losses.clear(); opt.zero_grad(set_to_none=True)
        train_step(0, max_steps)
    for s in range(1, warm): train_step(s, max_steps)
    sync(); t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    probe = 3 if a.smoke else 50
    for s in range(warm, warm + probe): train_step(s, max_steps)
    sync(); rate = probe / (time.perf_counter() - t0)                # steps/s
    left = budget_s - a.eval_minutes * 60 - (time.perf_counter() - T_START)
    total = max(warm + probe, min(max_steps, int(warm + probe + rate * left)))
    if a.smoke: total = min(total, tcfg.steps)
    print(f"compile + warm-up {t_compile:.0f} s; {rate * tcfg.batch_size:,.0f} img/s ({rate:.1f} steps/s); "
          f"training {total} steps of {tcfg.batch_size} ({total * tcfg.batch_size / len(imgs):.1f} epochs)", flush=True)
    t_train0 = time.perf_counter()
    deadline = T_START + budget_s - a.eval_minutes * 60
    step = warm + probe
    while step < total:
        train_step(step, total); step += 1
        if step % 100 == 0:
            l = torch.stack(losses).float().mean().item(); losses.clear()
            history['step'].append(step); history['loss'].append(l)
            if not math.isfinite(l): raise SystemExit(f"training diverged at step {step} (loss {l}); nothing was saved.")
            if time.perf_counter() > deadline:
                print(f"budget reached at step {step} of {total}: stopping early", flush=True); break
            if step % 1000 == 0: print(f"step {step}/{total} loss {l:.4f} {time.perf_counter() - T_START:.0f} s", flush=True)
    sync()
    if losses: history['step'].append(step); history['loss'].append(torch.stack(losses).float().mean().item())
    train_s = time.perf_counter() - t_train0 + t_compile
    info.update(steps=step, batch_size=tcfg.batch_size, train_img_s=rate * tcfg.batch_size, compile_s=t_compile,
                train_minutes=train_s / 60, epochs=step * tcfg.batch_size / len(imgs), params=count_params(model))

    # --- save: the EMA model as a folder, and the training state
    ck = dict(ema=ema.state_dict(), model=model.state_dict(), step=step, history=history, meta=dict(run=run.to_dict()))
    torch.save(dict(ck, optimizer=opt.state_dict(), config=dataclasses.asdict(tcfg)), out / 'train_state.pt')
    mdir = save_pretrained(ck, out / 'model', device=info['device'], minutes=round(train_s / 60, 2))
    del imgs, labels, opt

    # --- evaluate with chapter 10's protocol, N samples per setting
    t_eval0 = time.perf_counter()
    pt = load_pretrained(mdir, device=device)
    cache = out / 'samples'
    kw = dict(n=n_eval, cache=cache, batch=2500 if cuda else 65)
    samplers = ('ddim', 'dpm++2m') if a.smoke else ('ddim', 'dpm++2m', 'unipc', 'ipndm')
    steps_list = (2, 3) if a.smoke else (20, 10)
    end = T_START + budget_s - 20                            # keep 20 s for figures and the JSON
    rows, skipped, per_eval = [], [], None

    def row(s, k, **extra):
        "One evaluated setting, unless the budget cannot fit it (estimated from the first row's seconds per step)."
        nonlocal per_eval
        if per_eval is not None and time.perf_counter() + per_eval * k > end:
            skipped.append(dict(sampler=s, steps=k, **extra)); print(f"skipped {s} {k} {extra}: over budget", flush=True); return None
        t = time.perf_counter()
        r = evaluate_model(pt, s, k, **{**kw, **extra})
        per_eval = max(per_eval or 0, (time.perf_counter() - t) / k)
        print(f"{s:>8} {k:>3} steps {extra or ''}: FID {r['fid']:.2f} ({r['fid_ratio']:.2f}x floor {r['floor_fid']:.2f}), "
              f"KID {r['kid']:.2f}e-3, conf>0.9 {r['confident']:.0%}, {time.perf_counter() - T_START:.0f} s", flush=True)
        return r

    with autocast_ctx(device, amp):                          # sampling in the training's precision (features stay float32)
        rows = [r for r in (row(s, steps_list[0], guidance=1.0) for s in samplers) if r]    # the default-step rows first
        choice = choose_defaults(rows, lambda sampler, steps, **e: row(sampler, steps, **e), steps=steps_list[0], unguided_seed=False)
        unguided, guided, best = choice['unguided'], choice['guided'], choice['default']
        again = choice['default_seed1'] or best
        null_row = row(unguided['sampler'], unguided['steps'], spacing=unguided['spacing'], labels='null') if run.unet.num_classes else None
        rows += [r for r in (row(s, steps_list[1], guidance=1.0) for s in samplers) if r]
    fids = choice['eval']['fid_seeds']
    headline = dict(sampler=best['sampler'], steps=best['steps'], spacing=best['spacing'], guidance=best['guidance'],
                    guidance_interval=best['guidance_interval'], n=n_eval, fid=sum(fids) / len(fids),
                    fid_spread=choice['eval']['fid_spread'], fid_seeds=fids, floor_fid=best['floor_fid'],
                    fid_ratio=sum(fids) / len(fids) / best['floor_fid'], kid=best['kid'], classes=best['classes'], confident=best['confident'],
                    features=best['features'])
    # the run's sampling defaults become the measured best; the model card records the evaluation
    pt.run = with_defaults(pt.run, best)
    save_pretrained(pt, mdir, eval=choice['eval'])
    info['eval_minutes'] = (time.perf_counter() - t_eval0) / 60

    # --- figures
    x = pt.sample(40, seed=0).float().cpu()
    from torchvision.utils import make_grid, save_image
    save_image(make_grid(x, nrow=10, padding=1, pad_value=-1), out / 'figures' / 'samples.png', normalize=True, value_range=(-1, 1))
    fig, ax = plt.subplots(figsize=(6, 2.6), dpi=100)
    ax.plot(history['step'], history['loss']); ax.set(yscale='log', xlabel='step', ylabel='loss (100-step means)',
                                                      title=f"training loss, {step} steps on {info['device']}")
    ax.grid(alpha=.3, which='both'); fig.tight_layout(); fig.savefig(out / 'figures' / 'loss.png'); plt.close(fig)
    from ddpm_nb.fmnist import plot_eval
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    plot_eval(rows, 'fid_ratio', ax=ax); fig.tight_layout(); fig.savefig(out / 'figures' / 'fid_vs_steps.png'); plt.close(fig)

    info['total_minutes'] = (time.perf_counter() - T_START) / 60
    extra_rows = guided + ([again] if again is not best else []) + ([null_row] if null_row else [])
    res = dict(info=info, run=pt.run.to_dict(), headline=headline, rows=rows + extra_rows, skipped=skipped,
               table=eval_table(rows + extra_rows, timing=True))      # every row drawn in this run, on this device
    (out / 'results.json').write_text(json.dumps(res, indent=1))
    print(res['table'])
    spread = f" ± {headline['fid_spread']:.2f}" if headline['fid_spread'] is not None else ' (one seed)'
    w = f", guidance {_w_words(headline['guidance'], headline['guidance_interval'])}" if headline['guidance'] is not None else ''
    print(f"headline: {headline['sampler']} {headline['steps']} steps{w}: FID {headline['fid']:.2f}{spread} "
          f"= {headline['fid_ratio']:.2f}x the floor at N = {n_eval}; total {info['total_minutes']:.1f} min; wrote {out}", flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
