"""The console scripts ddpm_nb_train and ddpm_nb_sample, end to end, as a user runs them (subprocesses, tiny sizes).

Checks the exit status and that every user error is one line on stderr with no traceback, reported before any
training or sampling starts. Needs Fashion-MNIST locally (the Debian package dataset-fashion-mnist, as CI installs it).
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
ENV.pop('DDPM_NB_DEBUG', None)


def _cmd(name):
    "The installed console script, or the same entry point through python -m (a source checkout)."
    exe = shutil.which(name)
    return [exe] if exe else [sys.executable, '-m', 'ddpm_nb.cli', name.split('_')[-1]]


def run(name, *args, timeout=300, cwd=ROOT):
    return subprocess.run(_cmd(name) + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=cwd)


def _data_available():
    from ddpm_nb.data import find_fashion_mnist
    try: find_fashion_mnist(); return True
    except FileNotFoundError: return False


needs_data = pytest.mark.skipif(not _data_available() and not os.environ.get('CI'),
                                reason='Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)')
TINY = ('--preset', 'tiny', '--device', 'cpu', '--no_progress', '--n_samples', 4)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp('cli')
    r = run('ddpm_nb_train', *TINY, '--out_dir', out / 'run', '--steps', 4, '--ckpt_every', 2, '--export', out / 'tiny')
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


@pytest.fixture(scope='module')
def conditional(tmp_path_factory):
    "A class-conditional tiny model, trained for 2 steps: enough to test labels and guidance."
    out = tmp_path_factory.mktemp('cond')
    r = run('ddpm_nb_train', *TINY, '--conditional', '--out_dir', out / 'run', '--steps', 2, '--export', out / 'model')
    assert r.returncode == 0, r.stderr[-3000:]
    return out / 'model'


def _one_line_error(r, needle, status=2):
    assert r.returncode == status, (r.returncode, r.stderr[-2000:])
    err = r.stderr.strip()
    assert 'Traceback' not in err and len(err.splitlines()) == 1 and needle in err, err
    return err


# --- the normal path ---------------------------------------------------------------------------------------------

@needs_data
def test_train_writes_checkpoint_grid_history_and_export(trained):
    out, r = trained
    names = sorted(p.name for p in (out / 'run').iterdir() if not p.name.startswith('.'))
    assert names == ['checkpoint.pt', 'history.json', 'samples_0000004.png'], names
    ck = torch.load(out / 'run' / 'checkpoint.pt', weights_only=True)
    assert ck['step'] == 4 and ck['meta']['run']['train']['steps'] == 4
    assert sorted(p.name for p in (out / 'tiny').iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert (out / 'tiny' / 'model.safetensors').stat().st_size < 1_000_000
    assert 'exported the sampling weights' in r.stdout


@needs_data
def test_resume_continues_the_run(trained):
    out, _ = trained
    r = run('ddpm_nb_train', *TINY, '--out_dir', out / 'run', '--resume', '--steps', 6)
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.load(out / 'run' / 'checkpoint.pt', weights_only=True)['step'] == 6
    assert 'resuming at step 4 with --steps 6 (the run has 4)' in r.stdout, r.stdout        # a change applied is said


@needs_data
@pytest.mark.parametrize('src,sampler', [('tiny', 'ddpm'), ('tiny', 'dpm++2m'), ('run/checkpoint.pt', 'ddim')])
def test_sample_png_and_tensor(trained, src, sampler):
    out, _ = trained
    r = run('ddpm_nb_sample', '--checkpoint', out / src, '--sampler', sampler, '--steps', 3, '--n', 5, '--out', out / 's.pt',
            '--device', 'cpu', '--no_progress')
    assert r.returncode == 0, r.stderr[-3000:]
    x = torch.load(out / 's.pt', weights_only=True)['images']
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    r = run('ddpm_nb_sample', '--checkpoint', out / src, '--sampler', sampler, '--steps', 3, '--n', 5, '--out', out / 'g.png',
            '--device', 'cpu', '--no_progress', '--nrow', 5)
    assert r.returncode == 0 and (out / 'g.png').read_bytes()[:4] == b'\x89PNG'
    from PIL import Image
    assert Image.open(out / 'g.png').size == (5 * 30 + 2, 30 + 2)                        # one row of five, 2-pixel gaps


def test_shipped_model_samples_offline(tmp_path):
    "The shipped model gives images that look like clothes to the shipped classifier (noise or a broken model would not)."
    r = run('ddpm_nb_sample', '--n', 40, '--out', tmp_path / 's.pt', '--device', 'cpu', '--no_progress')
    assert r.returncode == 0, r.stderr[-3000:]
    x = torch.load(tmp_path / 's.pt', weights_only=True)['images']
    assert x.shape == (40, 1, 28, 28) and -1 <= x.min() < -0.9 and 0.5 < x.max() <= 1, (x.min(), x.max())
    from ddpm_nb.metrics import features
    _, logits = features(x, logits=True)
    p = logits.softmax(1)
    conf, classes = p.max(1).values.mean().item(), p.argmax(1).unique().numel()
    _, noise_logits = features(torch.rand(40, 1, 28, 28) * 2 - 1, logits=True)
    noise_classes = noise_logits.argmax(1).unique().numel()
    assert conf > 0.7 and classes >= 7, (conf, classes)                        # measured: 0.84 and 10 of 10 classes (32 images)
    assert noise_classes <= 4, noise_classes                                    # the check tells noise apart (2 classes)
    r = run('ddpm_nb_sample', '--steps', 2, '--n', 4, '--out', tmp_path / 'g.png', '--device', 'cpu', '--no_progress')
    assert r.returncode == 0 and (tmp_path / 'g.png').read_bytes()[:4] == b'\x89PNG', r.stderr[-2000:]


@needs_data
def test_user_errors_are_one_line(trained, tmp_path):
    out, _ = trained
    (tmp_path / 'corrupt.pt').write_bytes((out / 'run' / 'checkpoint.pt').read_bytes()[:300])
    (tmp_path / 'foreign.pt').write_bytes(b'hello')
    _one_line_error(run('ddpm_nb_train', *TINY, '--out_dir', out / 'run'), 'exists')
    _one_line_error(run('ddpm_nb_train', *TINY, '--out_dir', tmp_path / 'r', '--resume'), 'no checkpoint')
    _one_line_error(run('ddpm_nb_train', *TINY, '--out_dir', tmp_path / 'r', '--lr', -1), '--lr')
    _one_line_error(run('ddpm_nb_train', *TINY, '--out_dir', tmp_path / 'r', '--data_root', tmp_path / 'none'),
                    'apt-get install dataset-fashion-mnist')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', tmp_path / 'missing.pt', '--out', tmp_path / 'x.png'), 'no model file')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', tmp_path / 'corrupt.pt', '--out', tmp_path / 'x.png'), 'corrupt')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', tmp_path / 'foreign.pt', '--out', tmp_path / 'x.png'), 'corrupt')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', out / 'tiny', '--out', tmp_path / 'x.gif'), '.png or .pt')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', out / 'tiny', '--steps', 5000, '--out', tmp_path / 'x.png',
                        '--device', 'cpu'), 'steps')


def test_argparse_errors_exit_2():
    r = run('ddpm_nb_train', '--preset', 'huge', '--out_dir', 'x')
    assert r.returncode == 2 and 'invalid choice' in r.stderr and 'Traceback' not in r.stderr
    r = run('ddpm_nb_sample')
    assert r.returncode == 2 and '--out' in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr                   # argparse's errors are one line too


def test_options_are_generated_from_the_dataclasses():
    "Every TrainConfig field (but the command's own) is an option of ddpm_nb_train, its docment the help; likewise sampling."
    from dataclasses import fields
    from ddpm_nb.cli import TRAIN_OWN, SAMPLING_FIELDS, field_docs
    from ddpm_nb.train import TrainConfig
    from ddpm_nb.fmnist import FMNISTRun
    h = ' '.join(run('ddpm_nb_train', '--help').stdout.split())
    for f in fields(TrainConfig):
        if f.name in TRAIN_OWN: continue
        assert f'--{f.name}' in h and field_docs(TrainConfig)[f.name] in h, f.name
    h = ' '.join(run('ddpm_nb_sample', '--help').stdout.split())
    for name in SAMPLING_FIELDS: assert f'--{name}' in h and field_docs(FMNISTRun)[name] in h, name


# --- issue 12, item by item: each of these failed before the fix ---------------------------------------------------

def test_12_1_non_finite_options_refused_before_training(tmp_path):
    for args in (('--lr', 'inf'), ('--lr', 'nan'), ('--ema_decay', 'nan'), ('--max_minutes', 'nan'), ('--grad_clip', 'inf')):
        _one_line_error(run('ddpm_nb_train', *TINY, '--out_dir', tmp_path / 'r', *args), 'finite')
        assert not (tmp_path / 'r').exists(), args                             # nothing started
    for args in (('--guidance', 'nan'), ('--eta', 'inf'), ('--clip', 'nan')):
        _one_line_error(run('ddpm_nb_sample', *args, '--out', tmp_path / 'x.png'), 'finite')


@needs_data
def test_12_2_second_run_on_the_same_folder_is_refused_naming_the_holder(tmp_path):
    from ddpm_nb.core import RunLock
    with RunLock(tmp_path / 'run'):                                            # this process holds the folder
        r = run('ddpm_nb_train', *TINY, '--out_dir', tmp_path / 'run', '--steps', 2)
    err = _one_line_error(r, 'in use')
    assert f'pid {os.getpid()}' in err, err
    assert not (tmp_path / 'run' / 'checkpoint.pt').exists()
    r = run('ddpm_nb_train', *TINY, '--out_dir', tmp_path / 'run', '--steps', 2)  # released: the run goes ahead
    assert r.returncode == 0, r.stderr[-2000:]


@needs_data
def test_12_4_model_files_with_missing_or_wrong_entries_are_one_line(trained, tmp_path):
    out, _ = trained
    ck = torch.load(out / 'run' / 'checkpoint.pt', weights_only=True)
    old = dict(format='ddpm_nb.pretrained', version=1, run=ck['meta']['run'], weights=ck['ema'], meta={})
    torch.save({k: v for k, v in old.items() if k != 'run'}, tmp_path / 'norun.pt')
    torch.save(dict(old, weights={k: v for k, v in ck['ema'].items() if 'down' not in k}), tmp_path / 'nokeys.pt')
    bad = json.loads(json.dumps(old['run'])); bad['unet']['base'] *= 2
    torch.save(dict(old, run=bad), tmp_path / 'shapes.pt')
    shutil.copytree(out / 'tiny', tmp_path / 'folder')
    cfg = json.loads((tmp_path / 'folder' / 'config.json').read_text()); del cfg['run']
    (tmp_path / 'folder' / 'config.json').write_text(json.dumps(cfg))
    for name, needle in (('norun.pt', 'missing'), ('nokeys.pt', 'missing keys'), ('shapes.pt', 'shape'), ('folder', 'run')):
        _one_line_error(run('ddpm_nb_sample', '--checkpoint', tmp_path / name, '--out', tmp_path / 'x.png', '--steps', 2), needle)


@needs_data
def test_12_4_output_paths_are_checked_before_any_work(trained, tmp_path):
    out, _ = trained
    (tmp_path / 'afile').write_text('x'); (tmp_path / 'adir.png').mkdir()
    big = ('--n', 4000, '--steps', 200)                                        # minutes of sampling, if it started
    t0 = time.time()
    for o, needle in (('/proc/nope/x.png', 'cannot write'), (tmp_path / 'adir.png', 'is a folder'), (tmp_path / 'afile' / 'x.png', 'is a file')):
        _one_line_error(run('ddpm_nb_sample', *big, '--out', o, '--checkpoint', out / 'tiny', timeout=120), needle)
    assert time.time() - t0 < 240, 'the sampler ran before the output path was checked'
    for args, needle in ((('--out_dir', tmp_path / 'afile' / 'run'), 'is a file'),
                         (('--out_dir', tmp_path / 'r', '--export', '/proc/nope/m'), 'cannot write'),
                         (('--out_dir', tmp_path / 'r', '--export', tmp_path / 'afile'), 'is a file'),
                         (('--out_dir', tmp_path / 'r', '--export', tmp_path / 'm.pt'), 'names a folder')):
        _one_line_error(run('ddpm_nb_train', *TINY, '--steps', 100000, *args), needle)
        assert not (tmp_path / 'r').exists(), args                             # no training started


@needs_data
def test_12_4_device_is_checked_before_any_work(trained, tmp_path):
    out, _ = trained
    _one_line_error(run('ddpm_nb_sample', '--device', 'bogus', '--out', tmp_path / 'x.png'), 'not a device')
    _one_line_error(run('ddpm_nb_train', '--preset', 'tiny', '--out_dir', tmp_path / 'r', '--device', 'bogus'), 'not a device')
    if not torch.cuda.is_available():
        _one_line_error(run('ddpm_nb_sample', '--device', 'cuda', '--out', tmp_path / 'x.png'), 'no CUDA GPU')
        _one_line_error(run('ddpm_nb_train', '--preset', 'tiny', '--out_dir', tmp_path / 'r', '--device', 'cuda'), 'no CUDA GPU')
    assert not (tmp_path / 'r').exists()


def test_12_4_nrow_must_be_positive(tmp_path):
    for v in (-1, 0):
        _one_line_error(run('ddpm_nb_sample', '--nrow', v, '--out', tmp_path / 'x.png'), '--nrow')


@needs_data
def test_12_4_full_disk_is_one_line(tmp_path):
    "ENOSPC while writing a checkpoint (simulated: torch.save raises it) is one line, exit 2, not a 32-line traceback."
    code = ("import errno, sys, torch\n"
            "def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device', 'checkpoint.pt')\n"
            "torch.save = full\n"
            "from ddpm_nb.cli import train_main\n"
            f"sys.exit(train_main({[*map(str, TINY), '--out_dir', str(tmp_path / 'r'), '--steps', '2']!r}))\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, timeout=300)
    err = _one_line_error(r, 'no space left on the device')
    assert '--resume' in err, err


@needs_data
def test_12_5_stale_temp_files_of_dead_runs_are_removed(trained, tmp_path):
    out, _ = trained
    shutil.copytree(out / 'run', tmp_path / 'run')
    dead = subprocess.Popen([sys.executable, '-c', 'pass']); dead.wait()      # a pid that is no longer alive
    stale = tmp_path / 'run' / f'.checkpoint.pt.{dead.pid}.tmp'
    stale.write_bytes(b'half a checkpoint')
    r = run('ddpm_nb_train', *TINY, '--out_dir', tmp_path / 'run', '--resume', '--steps', 7)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not stale.exists() and 'removed 1 temporary file' in r.stdout, r.stdout


def test_12_6_a_seed_s_images_do_not_depend_on_batching_and_seeds_do_not_overlap(tmp_path):
    def draw(seed, bs, n=6):
        r = run('ddpm_nb_sample', '--n', n, '--batch_size', bs, '--seed', seed, '--steps', 3, '--out', tmp_path / 's.pt',
                '--device', 'cpu', '--no_progress')
        assert r.returncode == 0, r.stderr[-2000:]
        return torch.load(tmp_path / 's.pt', weights_only=True)['images']
    a, b, c = draw(0, 4), draw(0, 6), draw(1, 4)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()               # the batch size changes nothing
    d = torch.cdist(a.flatten(1), c.flatten(1))
    assert d.min() > 1.0, d.min()                                               # no image of seed 0 is one of seed 1


@needs_data
def test_12_7_resume_refuses_conflicting_options(trained, tmp_path):
    out, _ = trained
    shutil.copytree(out / 'run', tmp_path / 'run')
    before = (tmp_path / 'run' / 'checkpoint.pt').read_bytes()
    for args, needle in ((('--batch_size', 3), '--batch_size 3 (the run has'), (('--seed', 7), '--seed 7'), (('--pred', 'eps'), '--pred'),
                         (('--T', 500), '--T 500'), (('--conditional',), 'conditional'), (('--batch_size', 3, '--seed', 7), '--seed 7')):
        _one_line_error(run('ddpm_nb_train', *TINY, '--out_dir', tmp_path / 'run', '--resume', *args), needle)
    assert (tmp_path / 'run' / 'checkpoint.pt').read_bytes() == before                 # untouched
    r = run('ddpm_nb_train', *TINY, '--out_dir', tmp_path / 'run', '--resume', '--steps', 7, '--ckpt_every', 3, '--lr', 5e-4)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'with --steps 7' in r.stdout and '--ckpt_every 3' in r.stdout and '--lr 0.0005 (the run has 0.001)' in r.stdout, r.stdout
    assert torch.load(tmp_path / 'run' / 'checkpoint.pt', weights_only=True)['config']['lr'] == 5e-4       # and applied


def test_12_8_unsafe_pickle_is_refused_in_plain_words(tmp_path):
    evil = tmp_path / 'evil.pt'
    marker = tmp_path / 'PWNED'
    code = (f"import torch, os\nclass E:\n    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
            f"torch.save({{'format': 'ddpm_nb.pretrained', 'x': E()}}, {str(evil)!r})\n")
    subprocess.run([sys.executable, '-c', code], check=True, env=ENV)
    err = _one_line_error(run('ddpm_nb_sample', '--checkpoint', evil, '--out', tmp_path / 'x.png'), 'was NOT loaded')
    assert 'code' in err and 'system' in err and err.endswith('.'), err               # names the call; not cut short
    assert not marker.exists(), 'the pickle ran'


@needs_data
def test_labels_by_index_or_name_and_guidance(conditional, trained, tmp_path):
    out, _ = trained
    for label, k in (('sneaker', 7), ('Ankle boot', 9), ('3', 3)):
        r = run('ddpm_nb_sample', '--checkpoint', conditional, '--label', label, '--guidance', 2, '--n', 3, '--steps', 2,
                '--out', tmp_path / 's.pt', '--device', 'cpu', '--no_progress')
        assert r.returncode == 0, r.stderr[-2000:]
        assert torch.load(tmp_path / 's.pt', weights_only=True)['labels'].tolist() == [k] * 3
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', conditional, '--label', 'shoe', '--out', tmp_path / 'x.png'), 'not a class')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', conditional, '--label', 10, '--out', tmp_path / 'x.png'), '0 to 9')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', conditional, '--guidance', -1, '--out', tmp_path / 'x.png'), '>= 0')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', out / 'tiny', '--label', 'bag', '--out', tmp_path / 'x.png'), 'unconditional')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', out / 'tiny', '--guidance', 3, '--out', tmp_path / 'x.png'), 'unconditional')
