"""Worker for test_ddp.py, started by torchrun with 2 CPU processes (gloo): not a test module itself.

usage: python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT_DIR
Each rank trains a tiny model twice (straight, and in two halves with a checkpoint in between) and
saves its final weights to OUT_DIR/result{rank}.pt for the test to compare. Each rank is given its
own out_dir (OUT_DIR/{run}{rank}) so that the test can see which ranks wrote files."""
import os
import sys
from pathlib import Path

import torch
from torch import nn

from ddpm_nb.forward import Schedule
from ddpm_nb.train import TrainConfig, Trainer, load_checkpoint


class Tiny(nn.Module):
    "A two-layer MLP on (x, t/T): enough to have gradients."
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None].float() / 50], 1))


def main(base: Path):
    rank = int(os.environ['RANK'])
    sched = Schedule.from_name('linear', 50)
    first = []

    def data(n, g):
        x = torch.randn(n, 2, generator=g) * 0.5 + 1
        if not first: first.append(x[0].clone())
        return x

    def cfg(run):
        return TrainConfig(steps=6, batch_size=32, lr=1e-2, warmup_steps=2, ema_decay=0.9, log_every=2, ckpt_every=3,
                           out_dir=str(base / f'{run}{rank}'), device='cpu', progress=True)

    torch.manual_seed(100 + rank)              # different initial weights per rank: DDP must broadcast rank 0's
    init = {k: v.clone() for k, v in Tiny().state_dict().items()}
    torch.manual_seed(100 + rank)
    straight = Trainer(Tiny(), sched, data, cfg('straight')).fit()

    torch.manual_seed(100 + rank)
    Trainer(Tiny(), sched, data, cfg('resumed')).fit(3)           # writes resumed0/checkpoint.pt at step 3
    torch.manual_seed(7)
    resumed = Trainer(Tiny(), sched, data, cfg('resumed')).load(base / 'resumed0' / 'checkpoint.pt').fit()

    torch.save(dict(rank=rank, is_main=straight.is_main, world_size=straight.world_size, init=init, first=first[0],
                    straight=straight.model.state_dict(), straight_ema=straight.ema.state_dict(),
                    resumed=resumed.model.state_dict(), resumed_ema=resumed.ema.state_dict(),
                    history=straight.history), base / f'result{rank}.pt')
    ck = load_checkpoint(base / 'straight0' / 'checkpoint.pt')
    assert ck['world_size'] == 2 and len(ck['rng']) == 2, (ck['world_size'], len(ck['rng']))


if __name__ == '__main__':
    main(Path(sys.argv[1]))
    torch.distributed.destroy_process_group()
