"""tools/gpu_run.py, the GPU edition of chapter 10 as one command, in its --smoke mode (tiny sizes, about a minute of CPU),
run as the GPU machine runs it: through tools/gpu_device.sh, which also runs the bench's target row and packs the
outputs into a few small files (tools/gpu_pack.py).

Runs the scripts as a user does (subprocesses, no nbdev needed at run time) and checks everything they promise to write:
the model folder (safetensors + config.json + model card) that load_pretrained reads, the training state, the figures,
a JSON whose rows all share one N with the floor at that N, and a pack that unpacks to the same files. Needs
Fashion-MNIST locally (as CI installs it)."""
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
def device_run(tmp_path_factory):
    "tools/gpu_device.sh with SMOKE=1: gpu_run's folder is WORK/gpu, the files that come back are in OUT."
    tmp = tmp_path_factory.mktemp('gpu_device')
    env = dict(ENV, SMOKE='1', OUT=str(tmp / 'back'), WORK=str(tmp / 'work'), DEADLINE='100000')   # a slow CI machine still benches
    p = subprocess.run(['bash', str(ROOT / 'tools' / 'gpu_device.sh')], capture_output=True, text=True, timeout=900, env=env,
                       cwd=tmp)
    return p, tmp / 'work' / 'gpu', tmp / 'back'


@pytest.fixture(scope='module')
def smoke(device_run):
    p, out, _ = device_run
    return p, out


@needs_data
def test_smoke_runs(smoke):
    p, out = smoke
    assert p.returncode == 0, p.stdout[-3000:]
    assert 'headline:' in p.stdout and 'Traceback' not in p.stdout
    assert '# gpu_run exit status 0' in p.stdout and '# bench exit status 0' in p.stdout


@needs_data
def test_smoke_outputs(smoke):
    p, out = smoke
    res = json.loads((out / 'results.json').read_text())
    assert {'info', 'run', 'headline', 'rows', 'table'} <= set(res)
    assert res['info']['smoke'] and res['info']['steps'] >= 1
    assert res['info']['amp'] == 'bfloat16'                               # the mixed-precision path runs, on the CPU too
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


@needs_data
def test_device_pack(device_run):
    "What comes back from the GPU machine: at most 8 files under 16 MiB, which unpack to gpu_run's files, byte for byte."
    p, out, back = device_run
    assert p.returncode == 0, p.stdout[-3000:]
    files = sorted(f.name for f in back.iterdir())
    assert len(files) <= 8 and all((back / f).stat().st_size < 16 * 2**20 for f in files), files
    assert {'log.txt', 'bench.json', 'MANIFEST.json', 'results.json', 'bundle.tar.00'} <= set(files)
    assert json.loads((back / 'bench.json').read_text())['rows'][0]['train_img_s'] > 0
    assert 'headline:' in (back / 'log.txt').read_text()
    dest = back.parent / 'unpacked'
    q = subprocess.run([sys.executable, str(ROOT / 'tools' / 'gpu_pack.py'), 'unpack', str(back), str(dest)],
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert q.returncode == 0, q.stderr
    got = sorted(f.relative_to(dest).as_posix() for f in dest.rglob('*') if f.is_file())
    assert 'model/model.safetensors' in got and 'figures/samples.png' in got and not any(g.startswith('samples/') for g in got)
    for g in got: assert (dest / g).read_bytes() == (out / g).read_bytes(), g
    from ddpm_nb.fmnist import load_pretrained
    assert load_pretrained(dest / 'model').fingerprint() == load_pretrained(out / 'model').fingerprint()


@needs_data
def test_budget_skips_what_does_not_fit(tmp_path):
    "With a budget already spent, the first row is still measured, the rest are skipped and listed, and the run still ends well."
    out = tmp_path / 'out'
    p = subprocess.run([sys.executable, str(ROOT / 'tools' / 'gpu_run.py'), '--smoke', '--minutes', '0.1', '--out', str(out)],
                       capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((out / 'results.json').read_text())
    assert res['info']['budget_minutes'] == 0.1 and res['info']['steps'] == 6          # warm-up and probe steps only
    assert len(res['rows']) == 1 and res['rows'][0]['sampler'] == 'ddim'                # the first setting, then nothing fits
    assert len(res['skipped']) >= 5 and all({'sampler', 'steps'} <= set(s) for s in res['skipped'])
    h = res['headline']
    assert (h['sampler'], h['guidance'], h['fid_spread']) == ('ddim', 1.0, None) and 'over budget' in p.stdout
    from ddpm_nb.fmnist import gpu_run_report
    rep = gpu_run_report(out)
    assert '(one seed)' in rep and '**Not measured** (over the time budget): ' in rep and 'dpm++2m 2 steps, w = 1;' in rep
    assert 'ddim 2 steps, w = 1.5 at σ ∈ (0.28, 5.42]' in rep and 'ddim 2 steps, w = 1.5;' in rep and 'labels null' in rep


@needs_data
def test_report(smoke):
    "Chapter 10's gpu_run_report reads the folder back: a smoke warning, the headline as in the JSON, the table with timings."
    p, out = smoke
    from ddpm_nb.fmnist import gpu_run_report
    rep, res = gpu_run_report(out), json.loads((out / 'results.json').read_text())
    h = res['headline']
    assert rep.startswith('**A smoke run**') and f"FID {h['fid']:.2f} ± {h['fid_spread']:.2f} (2 seeds)" in rep
    assert f"**{h['fid_ratio']:.2f}× the floor**" in rep and rep.endswith(res['table']) and '| s / image |' in rep
    assert 'Not measured' not in rep


def _gpu_pack():
    sys.path.insert(0, str(ROOT / 'tools'))
    import gpu_pack
    return gpu_pack


def test_pack_limits_and_damage(tmp_path):
    "pack refuses before writing when the parts would be too many; unpack refuses damage, a used folder and escaping paths."
    gp = _gpu_pack()
    src = tmp_path / 'run'; (src / 'model').mkdir(parents=True); (src / 'samples').mkdir()
    (src / 'model' / 'w.bin').write_bytes(os.urandom(3 * 2**20)); (src / 'samples' / 'cache.pt').write_bytes(b'x' * 100)
    (src / 'results.json').write_text('{"ok": 1}')
    with pytest.raises(SystemExit, match='over --max_files 3'): gp.pack(src, tmp_path / 'few', part_mib=1, max_files=3)
    assert not (tmp_path / 'few').exists()                                      # nothing written
    man = gp.pack(src, tmp_path / 'back', part_mib=1, max_files=8)
    assert len(man['parts']) == 4 and man['files'] == ['model/w.bin', 'results.json']  # samples/ left out
    gp.unpack(tmp_path / 'back', tmp_path / 'ok')
    assert (tmp_path / 'ok' / 'model' / 'w.bin').read_bytes() == (src / 'model' / 'w.bin').read_bytes()
    with pytest.raises(SystemExit, match='already holds files'): gp.unpack(tmp_path / 'back', tmp_path / 'ok')
    part = tmp_path / 'back' / 'bundle.tar.02'
    good = part.read_bytes(); b = bytearray(good); b[10] ^= 1; part.write_bytes(bytes(b))
    with pytest.raises(SystemExit, match='bundle.tar.02 is damaged'): gp.unpack(tmp_path / 'back', tmp_path / 'bad')
    part.write_bytes(good); (tmp_path / 'back' / 'bundle.tar.03').unlink()
    with pytest.raises(SystemExit, match='bundle.tar.03 is missing'): gp.unpack(tmp_path / 'back', tmp_path / 'bad')
    assert not (tmp_path / 'bad').exists()                                     # a refused unpack writes nothing
    # a crafted pack whose tar names a path outside the destination
    import io, tarfile, hashlib
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        ti = tarfile.TarInfo('../escape.txt'); data = b'bad'; ti.size = len(data); tar.addfile(ti, io.BytesIO(data))
    whole = buf.getvalue(); h = hashlib.sha256(whole).hexdigest()
    evil = tmp_path / 'evil'; evil.mkdir(); (evil / 'bundle.tar.00').write_bytes(whole)
    (evil / 'MANIFEST.json').write_text(json.dumps(dict(format='ddpm_nb-pack-1', bytes=len(whole), sha256=h, files=['../escape.txt'],
                                                        parts=[dict(name='bundle.tar.00', bytes=len(whole), sha256=h)])))
    with pytest.raises(SystemExit, match='refusing'): gp.unpack(evil, tmp_path / 'dest')
    assert not (tmp_path / 'escape.txt').exists() and not (tmp_path / 'dest').exists()
