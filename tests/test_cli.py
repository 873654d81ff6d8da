"""The console scripts ddpm_nb_train and ddpm_nb_sample, end to end, as a user runs them (subprocesses, tiny sizes).

Checks the exit status and that every user error is one line on stderr with no traceback.
Needs Fashion-MNIST locally (the Debian package dataset-fashion-mnist, as CI installs it)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS='2', PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))


def _cmd(name):
    "The installed console script, or the same entry point through python -m (a source checkout)."
    exe = shutil.which(name)
    return [exe] if exe else [sys.executable, '-m', 'ddpm_nb.cli', name.split('_')[-1]]


def run(name, *args, timeout=300):
    return subprocess.run(_cmd(name) + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)


def _data_available():
    from ddpm_nb.data import find_fashion_mnist
    try: find_fashion_mnist(); return True
    except FileNotFoundError: return False


needs_data = pytest.mark.skipif(not _data_available() and not os.environ.get('CI'),
                                reason='Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp('cli')
    r = run('ddpm_nb_train', '--preset', 'tiny', '--out_dir', out / 'run', '--steps', 4, '--ckpt_every', 2, '--n_samples', 4,
            '--device', 'cpu', '--no_progress', '--export', out / 'tiny.pt')
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


@needs_data
def test_train_writes_checkpoint_grid_history_and_export(trained):
    out, r = trained
    names = sorted(p.name for p in (out / 'run').iterdir())
    assert names == ['checkpoint.pt', 'history.json', 'samples_0000004.png'], names
    ck = torch.load(out / 'run' / 'checkpoint.pt', weights_only=True)
    assert ck['step'] == 4 and ck['meta']['run']['steps'] == 4
    assert (out / 'tiny.pt').stat().st_size < 1_000_000
    assert 'exported the sampling weights' in r.stdout


@needs_data
def test_resume_continues_the_run(trained):
    out, _ = trained
    r = run('ddpm_nb_train', '--preset', 'tiny', '--out_dir', out / 'run', '--resume', '--steps', 6, '--n_samples', 4,
            '--device', 'cpu', '--no_progress')
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.load(out / 'run' / 'checkpoint.pt', weights_only=True)['step'] == 6


@needs_data
@pytest.mark.parametrize('src,sampler', [('tiny.pt', 'ddpm'), ('tiny.pt', 'dpm++2m'), ('run/checkpoint.pt', 'ddim')])
def test_sample_png_and_tensor(trained, src, sampler):
    out, _ = trained
    r = run('ddpm_nb_sample', '--checkpoint', out / src, '--sampler', sampler, '--steps', 3, '--n', 5, '--out', out / 's.pt',
            '--device', 'cpu', '--no_progress')
    assert r.returncode == 0, r.stderr[-3000:]
    x = torch.load(out / 's.pt', weights_only=True)['images']
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    r = run('ddpm_nb_sample', '--checkpoint', out / src, '--sampler', sampler, '--steps', 3, '--n', 5, '--out', out / 'g.png',
            '--device', 'cpu', '--no_progress')
    assert r.returncode == 0 and (out / 'g.png').read_bytes()[:4] == b'\x89PNG'


def test_shipped_model_samples_offline(tmp_path):
    r = run('ddpm_nb_sample', '--steps', 2, '--n', 2, '--out', tmp_path / 'g.png', '--device', 'cpu', '--no_progress')
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / 'g.png').is_file()


def _one_line_error(r, needle):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    err = r.stderr.strip()
    assert 'Traceback' not in err and len(err.splitlines()) == 1 and needle in err, err


@needs_data
def test_user_errors_are_one_line(trained, tmp_path):
    out, _ = trained
    (tmp_path / 'corrupt.pt').write_bytes((out / 'tiny.pt').read_bytes()[:300])
    (tmp_path / 'foreign.pt').write_bytes(b'hello')
    _one_line_error(run('ddpm_nb_train', '--preset', 'tiny', '--out_dir', out / 'run'), 'exists')
    _one_line_error(run('ddpm_nb_train', '--preset', 'tiny', '--out_dir', tmp_path / 'r', '--resume'), 'no checkpoint')
    _one_line_error(run('ddpm_nb_train', '--preset', 'tiny', '--out_dir', tmp_path / 'r', '--lr', -1), '--lr')
    _one_line_error(run('ddpm_nb_train', '--preset', 'tiny', '--out_dir', tmp_path / 'r', '--data_root', tmp_path / 'none'),
                    'apt-get install dataset-fashion-mnist')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', tmp_path / 'missing.pt', '--out', tmp_path / 'x.png'), 'no model file')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', tmp_path / 'corrupt.pt', '--out', tmp_path / 'x.png'), 'corrupt')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', tmp_path / 'foreign.pt', '--out', tmp_path / 'x.png'), 'corrupt')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', out / 'tiny.pt', '--out', tmp_path / 'x.gif'), '.png or .pt')
    _one_line_error(run('ddpm_nb_sample', '--checkpoint', out / 'tiny.pt', '--steps', 5000, '--out', tmp_path / 'x.png',
                        '--device', 'cpu'), 'steps')


def test_argparse_errors_exit_2():
    r = run('ddpm_nb_train', '--preset', 'huge', '--out_dir', 'x')
    assert r.returncode == 2 and 'invalid choice' in r.stderr and 'Traceback' not in r.stderr
    r = run('ddpm_nb_sample')
    assert r.returncode == 2 and '--out' in r.stderr
