#!/usr/bin/env python
"""Compute every figure chapter 10 shows for a model, into the sample cache, so that the chapter re-executes quickly.

    OMP_NUM_THREADS=2 nice -n 15 python tools/eval_fmnist.py ddpm_nb/assets/fmnist_unet --write-defaults
    python tools/eval_fmnist.py runs/cpu/model --n 1000             # a quicker look (not the chapter's N)
    python tools/eval_fmnist.py --recipes runs/recipes               # the recipe table (seven models, N = 1000)

MODEL is anything `load_pretrained` reads: a `save_pretrained` folder, an older .pt export, or a training checkpoint.
For the model it evaluates, with chapter 10's protocol (`evaluate_model`, the same settings as the chapter's cells, so
the chapter's cells then read every sample set from the cache):
  1. each sampler of `EVAL_SAMPLERS` (DDIM, DPM-Solver++(2M), UniPC, iPNDM; each on its default spacing) at 20 steps,
     N = 2000, seed 0, balanced classes for a conditional model;
  2-3. `choose_defaults`, the rule chapter 10 states: for a conditional model, the best of them with classifier-free
     guidance at each setting of `EVAL_GUIDANCE` (w = 1.5 at every noise level; w = 1.25, 1.5 and 2 in sigma's
     interval (0.28, 5.42]; w = 1.5 in (0.5, 3] and in (0.1, 10]; a guided step costs two network evaluations);
     the best 20-step row (guided or not) again with seed 1 (the spread of the headline), and the best unguided one too when they differ; then, for a conditional model, the best
     unguided row with the null label (the unconditional generator inside it);
  4. every sampler at 10 steps.
The default sampler, spacing, step count, guidance scale and interval are the best 20-step row (lowest FID at N = 2000, seed 0):
the budget the defaults are sized for. `--write-defaults` writes them into the model's config.json, with the evaluation for the
model card (the model must be a folder, or give `--save FOLDER`).
Samples are cached under `cache_dir()/samples` ($DDPM_NB_CACHE, default ~/.cache/ddpm_nb); an interrupted run resumes
where it stopped. Cost on a CPU: about 720 000 network evaluations of the 1.7 M-parameter U-Net (about 60 min on 2 free cores).
"""
import argparse, json, os, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('model', nargs='?', default=None, help='model folder, .pt export or training checkpoint (default: the shipped model)')
    p.add_argument('--n', type=int, default=None, help='samples per setting (default: 2000, the chapter\'s N; 1000 for --recipes)')
    p.add_argument('--steps', type=int, nargs='+', default=None, help='step counts (default: EVAL_STEPS, 10 and 20)')
    p.add_argument('--samplers', nargs='+', default=None, help='samplers (default: EVAL_SAMPLERS)')
    p.add_argument('--write-defaults', action='store_true', help="write the best setting into the model's config.json and card")
    p.add_argument('--save', default=None, help='with --write-defaults: write the model to this folder instead of MODEL')
    p.add_argument('--recipes', default=None, help='a folder of recipe runs (runs/recipes): compute the recipe table instead')
    p.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 1)))
    p.add_argument('--batch', type=int, default=250)
    p.add_argument('--json', default=None, help='also write the rows to this file')
    p.add_argument('--extra', default='all', choices=['all', 'seed', 'none'],
                   help="after the first rows: the best row's second seed and the null-label row (all), the second seed only, or neither")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    from ddpm_nb.fmnist import (EVAL_SAMPLERS, EVAL_STEPS, _w_words, choose_defaults, eval_table, evaluate_model,
                                load_pretrained, save_pretrained, with_defaults)
    t0 = time.perf_counter()
    log = lambda r, what='': print(f"{r['sampler']:>8} {r['steps']:>3} steps {r['spacing']:<9} {r['labels'] or '':<8} seed {r['seed']} "
                                   f"N {r['n']}: FID {r['fid']:7.2f} = {r['fid_ratio']:5.2f}x floor {r['floor_fid']:.2f} | KID {r['kid']:.2f}e-3 "
                                   f"| conf>0.9 {r['confident']:.0%} | {time.perf_counter() - t0:.0f} s {what}", flush=True)

    if a.recipes:                                        # the chapter's recipe table: N = 1000, DDIM and DPM-Solver++(2M) at 20 steps
        rows = []
        for name in ('eps_cos_minsnr', 'v_cos_minsnr', 'v_cos_simple', 'x0_cos_minsnr', 'eps_lin_minsnr', 'v_cos_minsnr_lr2e-3',
                     'v_cos_minsnr_cond'):
            folder = Path(a.recipes) / name
            model = next((q for q in (folder / 'model', folder / 'model.pt') if q.exists()), None)
            if model is None: print(f"{name}: no model yet in {folder}", flush=True); continue
            rp = load_pretrained(model)
            labels = 'null' if rp.run.unet.num_classes else None
            for smp in ('ddim', 'dpm++2m'):
                rows.append(dict(recipe=name, **evaluate_model(rp, smp, 20, n=a.n or 1000, seed=0, labels=labels,
                                                                batch=a.batch))); log(rows[-1], name)
            if labels:
                rows.append(dict(recipe=name, **evaluate_model(rp, 'ddim', 20, n=a.n or 1000, seed=0, batch=a.batch)))
                log(rows[-1], name + ' (balanced)')
        print(eval_table(rows, name='recipe'))
        if a.json: Path(a.json).write_text(json.dumps(rows, indent=1))
        return 0

    pt = load_pretrained(a.model)
    print(pt, flush=True)
    samplers, steps = a.samplers or EVAL_SAMPLERS, sorted(a.steps or EVAL_STEPS, reverse=True)
    a.n = a.n or 2000
    cond = bool(pt.run.unet.num_classes)
    kw = dict(n=a.n, batch=a.batch)
    rows = [evaluate_model(pt, s, steps[0], guidance=1.0, **kw) for s in samplers]   # the default-step rows first, unguided
    for r in rows: log(r)

    def evaluate(**settings):                              # choose_defaults' guided rows and second seeds
        if settings['seed'] == 1 and a.extra == 'none': return None
        r = evaluate_model(pt, **settings, **kw)
        log(r, '(second seed)' if settings['seed'] == 1 else f"(guidance {_w_words(r['guidance'], r['guidance_interval'])})")
        return r

    choice = choose_defaults(rows, evaluate, steps=steps[0])
    best, unguided = choice['default'], choice['unguided']
    extra = choice['guided'] + [r for r in (choice['default_seed1'], choice['unguided_seed1'] if best is not unguided else None) if r]
    if cond and a.extra == 'all':
        null = evaluate_model(pt, unguided['sampler'], unguided['steps'], unguided['spacing'], labels='null', **kw); log(null, '(null label)')
        extra.append(null)
    for k in steps[1:]:
        for s in samplers: rows.append(evaluate_model(pt, s, k, guidance=1.0, **kw)); log(rows[-1])
    print(eval_table(rows + extra))
    ev = choice['eval']
    fids, spread = ev['fid_seeds'], ev['fid_spread'] or 0.0
    m = sum(fids) / len(fids)
    w = f", guidance {_w_words(best['guidance'], best['guidance_interval'])}" if cond else ''
    print(f"\nbest {best['steps']}-step setting: {best['sampler']}, {best['spacing']} spacing{w}: FID {m:.2f} ± {spread:.2f} "
          f"(seeds {', '.join(map(str, range(len(fids))))}) = {m / best['floor_fid']:.2f}x the floor {best['floor_fid']:.2f} at N = {a.n}; "
          f"{best['classes']} classes, {best['confident']:.0%} confidently classified")
    print(f"model defaults now: {pt.run.sampler}, {pt.run.steps} steps, spacing {pt.run.spacing}, "
          f"guidance {_w_words(pt.run.guidance, pt.run.guidance_interval)}")
    if a.write_defaults:
        from ddpm_nb.fmnist import default_model_path
        target = Path(a.save) if a.save else Path(a.model) if a.model else default_model_path()
        if not a.save and not target.is_dir():
            sys.exit("--write-defaults needs MODEL to be a folder (or --save FOLDER) to write config.json into.")
        pt.run = with_defaults(pt.run, best)
        save_pretrained(pt, target, eval=ev)
        print(f"wrote the defaults ({best['sampler']}, {best['steps']} steps, {best['spacing']}{w}) and the evaluation into {target}")
    if a.json: Path(a.json).write_text(json.dumps(dict(rows=rows + extra, best=best, spread=spread), indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
