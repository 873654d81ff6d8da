"""Train one Fashion-MNIST recipe on the CPU (one thread unless --threads) with checkpoints and --resume, then export its EMA weights.

    python tools/fmnist_recipe.py --name v_cos_minsnr --pred v --minutes 6 --out_dir runs/recipes
    python tools/fmnist_recipe.py --name ship --pred v --conditional --steps 4000 --out_dir runs/long --resume
    python tools/fmnist_recipe.py --name ship --pred v --conditional --steps 7000 --lr_schedule wsd --decay_frac 0.4 --out_dir runs/long --resume
    python tools/fmnist_recipe.py --name ship --pred v --conditional --label_dropout 0.2 --steps 10000 --lr_schedule wsd --decay_frac 0.4 --out_dir runs/long --resume --threads 2
"""
import argparse, dataclasses, json, os, sys, time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument('--name', required=True)
p.add_argument('--pred', default='v', choices=['eps', 'x0', 'v'])
p.add_argument('--schedule', default='cosine')
p.add_argument('--weighting', default='min_snr', choices=['simple', 'min_snr'])
p.add_argument('--lr', type=float, default=1e-3)
p.add_argument('--lr_schedule', default='constant', choices=['constant', 'cosine', 'wsd'])
p.add_argument('--decay_frac', type=float, default=0.2, help="'wsd': decay over this final fraction of the steps")
p.add_argument('--min_lr_ratio', type=float, default=0.1)
p.add_argument('--batch_size', type=int, default=64)
p.add_argument('--steps', type=int, default=None, help='total steps (the lr schedule spans them)')
p.add_argument('--minutes', type=float, default=None, help='wall-clock budget: steps estimated from a timed warm-up')
p.add_argument('--conditional', action='store_true')
p.add_argument('--label_dropout', type=float, default=0.15)
p.add_argument('--preset', default='small')
p.add_argument('--ema_decay', type=float, default=0.998)
p.add_argument('--ckpt_every', type=int, default=250)
p.add_argument('--threads', type=int, default=1)
p.add_argument('--out_dir', default='runs/recipes')
p.add_argument('--resume', action='store_true')
p.add_argument('--seed', type=int, default=0)
a = p.parse_args()
os.environ.setdefault('OMP_NUM_THREADS', str(a.threads))
import torch
torch.set_num_threads(a.threads)
from ddpm_nb.unet import UNET_PRESETS
from ddpm_nb.train import TrainConfig
from ddpm_nb.fmnist import FMNISTRun, make_trainer, save_pretrained

out = Path(a.out_dir) / a.name
out.mkdir(parents=True, exist_ok=True)
unet = UNET_PRESETS[a.preset]
if a.conditional: unet = dataclasses.replace(unet, num_classes=10)
steps = a.steps
if steps is None:                                   # time 30 steps of this recipe, then size the run to the budget
    probe = FMNISTRun(unet, TrainConfig(steps=10**6, batch_size=a.batch_size, lr=a.lr, warmup_steps=200, ema_decay=a.ema_decay,
                                        pred=a.pred, weighting=a.weighting, label_dropout=a.label_dropout if a.conditional else 0.0),
                      schedule=a.schedule)
    tr = make_trainer(probe, device='cpu', progress=False, seed=a.seed)
    tr.fit(5); t0 = time.perf_counter(); tr.fit(30); dt = (time.perf_counter() - t0) / 30
    steps = int(a.minutes * 60 / dt)
    print(f"{dt:.3f} s/step -> {steps} steps in {a.minutes} min", flush=True)
run = FMNISTRun(unet, TrainConfig(steps=steps, batch_size=a.batch_size, lr=a.lr, warmup_steps=min(200, steps // 10),
                                  lr_schedule=a.lr_schedule, min_lr_ratio=a.min_lr_ratio, decay_frac=a.decay_frac,
                                  ema_decay=a.ema_decay, pred=a.pred, weighting=a.weighting,
                                  label_dropout=a.label_dropout if a.conditional else 0.0), schedule=a.schedule)
tr = make_trainer(run, device='cpu', out_dir=str(out), ckpt_every=a.ckpt_every, progress=False, seed=a.seed)
ck = out / 'checkpoint.pt'
t_prev = 0.0
if ck.is_file():
    if not a.resume: sys.exit(f"{ck} exists: add --resume")
    tr.load(ck); t_prev = tr.meta.get('train_seconds', 0.0)
    print(f"resumed at step {tr.step}", flush=True)
t0 = time.perf_counter()
while tr.step < steps:
    tr.fit(min(a.ckpt_every, steps - tr.step))
    tr.meta['train_seconds'] = t_prev + time.perf_counter() - t0
    tr.save()
    print(f"step {tr.step}/{steps} loss {sum(tr.history['loss'][-50:]) / 50:.4f} "
          f"{tr.meta['train_seconds'] / 60:.1f} min", flush=True)
mins = tr.meta.get('train_seconds', 0.0) / 60
save_pretrained(ck, out / 'model', device=f"cpu ({a.threads} thread{'s' if a.threads > 1 else ''})", minutes=round(mins, 1))
json.dump(dict(name=a.name, steps=steps, minutes=mins, recipe=vars(a)), open(out / 'done.json', 'w'), indent=1)
print('done', out / 'model', flush=True)
