"""tools/gpu_run.py, the GPU edition of chapter 10 as one command, in its --smoke mode (tiny sizes, seconds of CPU).

Runs the script as a user does (a subprocess, no nbdev needed at run time) and checks everything it promises to write:
the model folder (safetensors + config.json + model card) that load_pretrained reads, the training state, the figures,
and a JSON whose rows all share one N with the floor at that N. Needs Fashion-MNIST locally (as CI installs it)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddpm_nb.fmnist import EVAL_GUIDANCE

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS='2', PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))


def _data_available():
    from ddpm_nb.data import find_fashion_mnist
    try: find_fashion_mnist(); return True
    except FileNotFoundError: return False


needs_data = pytest.mark.skipif(not _data_available() and not os.environ.get('CI'),
                                reason='Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)')


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_run') / 'out'
    p = subprocess.run([sys.executable, str(ROOT / 'tools' / 'gpu_run.py'), '--smoke', '--out', str(out)],
                       capture_output=True, text=True, timeout=900, env=ENV, cwd=ROOT)
    return p, out


@needs_data
def test_smoke_runs(smoke):
    p, out = smoke
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'headline:' in p.stdout and 'Traceback' not in p.stderr


@needs_data
def test_smoke_outputs(smoke):
    p, out = smoke
    res = json.loads((out / 'results.json').read_text())
    assert {'info', 'run', 'headline', 'rows', 'table'} <= set(res)
    assert res['info']['smoke'] and res['info']['steps'] >= 1
    ns = {r['n'] for r in res['rows']}
    assert len(ns) == 1 and res['headline']['n'] in ns                    # one N everywhere
    for r in res['rows']:
        assert r['floor_fid'] > 0 and r['fid_ratio'] == pytest.approx(r['fid'] / r['floor_fid'])
    assert {r['labels'] for r in res['rows']} == {'balanced', 'null'}     # conditional by default, and its null-label row
    for f in ('samples.png', 'loss.png', 'fid_vs_steps.png'):
        assert (out / 'figures' / f).stat().st_size > 1000
    assert (out / 'train_state.pt').is_file()


@needs_data
def test_smoke_model_loads(smoke):
    p, out = smoke
    from ddpm_nb.fmnist import load_pretrained
    pt = load_pretrained(out / 'model')
    res = json.loads((out / 'results.json').read_text())
    h = res['headline']
    iv = h['guidance_interval'] and tuple(h['guidance_interval'])
    assert (pt.run.sampler, pt.run.steps, pt.run.guidance, pt.run.guidance_interval) == (h['sampler'], h['steps'], h['guidance'], iv)
    tried = {(r['guidance'], r['guidance_interval'] and tuple(r['guidance_interval'])) for r in res['rows'] if r['labels'] == 'balanced'}
    assert tried >= {(1.0, None), *EVAL_GUIDANCE}                                # every guidance setting was measured
    assert pt.meta['eval']['fid'] == pytest.approx(min(r['fid'] for r in res['rows'] if r['steps'] == pt.run.steps
                                                       and r['seed'] == 0 and r['labels'] == 'balanced'))
    assert 'FID' in (out / 'model' / 'README.md').read_text()
    x = pt.sample(2, steps=2)
    assert x.shape == (2, 1, 28, 28) and x.abs().max() <= 1


def test_runs_without_nbdev(tmp_path):
    "The GPU machine has no nbdev or fastcore: everything the script imports must load without them."
    code = ("import sys; sys.modules['fastcore'] = sys.modules['nbdev'] = sys.modules['execnb'] = None\n"
            "import ddpm_nb.fmnist, ddpm_nb.train, ddpm_nb.data, ddpm_nb.metrics, ddpm_nb.sample\n"
            "from ddpm_nb.fmnist import Pretrained\n"
            "assert Pretrained.sample.__qualname__ == 'Pretrained.sample' and callable(Pretrained.from_pretrained)\n"
            "print('ok')")
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert p.returncode == 0 and 'ok' in p.stdout, p.stderr[-3000:]
