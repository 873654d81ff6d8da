"""DistributedDataParallel on the CPU: two gloo processes started with torchrun train a tiny model.

Checks that the replicas hold identical weights (and EMA weights) after training, that the ranks
saw different data, that only rank 0 wrote files, and that a run resumed from a checkpoint written
by the two processes matches the uninterrupted run bit for bit."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name('ddp_worker.py')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def ddp_run(tmp_path_factory):
    if not torch.distributed.is_available():
        pytest.skip('torch.distributed is not available in this build')
    out = tmp_path_factory.mktemp('ddp')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc_per_node', '2',
           '--master_addr', '127.0.0.1', '--master_port', str(_free_port()), str(WORKER), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=ROOT)
    assert r.returncode == 0, f"torchrun failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    res = [torch.load(out / f'result{k}.pt', weights_only=True) for k in (0, 1)]
    return out, res, r


def test_replicas_hold_identical_weights(ddp_run):
    _, (r0, r1), _ = ddp_run
    assert r0['world_size'] == r1['world_size'] == 2
    assert any(not torch.equal(r0['init'][k], r1['init'][k]) for k in r0['init']), 'ranks should start different'
    for key in ('straight', 'straight_ema', 'resumed', 'resumed_ema'):
        for k in r0[key]:
            assert torch.equal(r0[key][k], r1[key][k]), (key, k)
    assert any(not torch.equal(r0['straight'][k], r0['init'][k]) for k in r0['init']), 'training changed nothing'


def test_ranks_see_different_data(ddp_run):
    _, (r0, r1), _ = ddp_run
    assert not torch.equal(r0['first'], r1['first'])


def test_only_rank_0_writes_files(ddp_run):
    out, (r0, r1), _ = ddp_run
    assert r0['is_main'] and not r1['is_main']
    for run in ('straight', 'resumed'):
        assert sorted(p.name for p in (out / f'{run}0').iterdir() if p.name != '.lock') == ['checkpoint.pt']   # .lock: the run lock
        assert not (out / f'{run}1').exists(), f'rank 1 wrote into {run}1'


def test_resume_under_ddp_is_exact(ddp_run):
    _, (r0, _), _ = ddp_run
    for k in r0['straight']:
        assert torch.equal(r0['straight'][k], r0['resumed'][k]), k
        assert torch.equal(r0['straight_ema'][k], r0['resumed_ema'][k]), k
    assert len(r0['history']['loss']) == 6
