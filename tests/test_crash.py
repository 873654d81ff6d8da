"""The crash test, short: ddpm_nb_train killed with SIGKILL three times (once while a checkpoint is being written),
resumed each time, ends bit-identical to an uninterrupted run with no temporary file left (tools/crash_test.py)."""
import os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _data_available():
    from ddpm_nb.data import find_fashion_mnist
    try: find_fashion_mnist(); return True
    except FileNotFoundError: return False


@pytest.mark.skipif(not _data_available() and not os.environ.get('CI'), reason='Fashion-MNIST not installed')
def test_kill_9_then_resume_is_bit_exact():
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'crash_test.py'), '--kills', '3', '--steps', '12', '--ckpt_every', '1'],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert 'survived 3 of 3 kills' in r.stdout and 'bit-identical' in r.stdout, r.stdout
