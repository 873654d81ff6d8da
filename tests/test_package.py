"""Package-level tests: they import ddpm_nb as a programmer would and never run a notebook."""
import ast
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import ddpm_nb
from ddpm_nb import forward

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / 'ddpm_nb'
CHAPTER_MODULES = sorted(p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_'))


def _run(code):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)


def test_version_matches_settings():
    ini = (ROOT / 'settings.ini').read_text()
    assert re.search(r'^version\s*=\s*(\S+)', ini, re.M).group(1) == ddpm_nb.__version__


@pytest.mark.parametrize('mod', CHAPTER_MODULES)
def test_imports_without_notebook_tooling(mod):
    "Every module imports in a fresh interpreter where nbdev, IPython and jupyter are unavailable (fastcore is a runtime dependency)."
    blocked = ['nbdev', 'IPython', 'jupyter', 'execnb', 'nbformat']
    code = ('import sys\n' + ''.join(f'sys.modules[{b!r}] = None\n' for b in blocked) +
            f'import ddpm_nb.{mod} as m\nprint(len(m.__all__))')
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) > 0


@pytest.mark.parametrize('mod', CHAPTER_MODULES)
def test_source_compiles_without_escape_warnings(mod):
    "LaTeX in docstrings must be raw strings: a stray \\b or \\m is a bug, not a warning."
    src = (PKG / f'{mod}.py').read_text()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        compile(src, f'{mod}.py', 'exec')


def _chapter_order():
    order = {}
    for nb in (ROOT / 'nbs').glob('[0-9]*.ipynb'):
        m = re.search(r'#\|\s*default_exp\s+(\w+)', nb.read_text())
        if m: order[m.group(1)] = nb.name
    return order


def test_no_module_imports_a_later_chapter():
    "The dependency order of ddpm_nb/ is the order of the book."
    order = _chapter_order()
    for mod, nb in order.items():
        tree = ast.parse((PKG / f'{mod}.py').read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                name = node.module.split('.')[-1] if (node.level or node.module.startswith('ddpm_nb')) else None
                if name in order:
                    assert order[name] <= nb, f'{mod} ({nb}) imports {name} from a later chapter ({order[name]})'


def test_exported_code_has_no_cuda_calls_or_notebook_globals():
    for mod in CHAPTER_MODULES:
        src = (PKG / f'{mod}.py').read_text()
        assert '.cuda()' not in src, mod
        assert 'get_ipython' not in src, mod


def test_public_names_exist():
    names = ['check_betas', 'q_step', 'q_mean_var', 'q_sample', 'linear_betas', 'quadratic_betas',
             'cosine_betas', 'sigmoid_betas', 'make_betas', 'SCHEDULES', 'Schedule', 'check_t']
    for n in names:
        assert hasattr(forward, n) and n in forward.__all__, n


@pytest.mark.parametrize('mod', CHAPTER_MODULES)
def test_every_name_in_all_exists(mod):
    "`__all__` is what `from ddpm_nb.X import *` and the site list: every name in it must exist, once."
    import importlib
    m = importlib.import_module(f'ddpm_nb.{mod}')
    missing = [n for n in m.__all__ if not hasattr(m, n)]
    assert not missing, f'ddpm_nb.{mod}.__all__ names {missing}, which the module does not define'
    assert len(set(m.__all__)) == len(m.__all__), sorted(n for n in m.__all__ if m.__all__.count(n) > 1)


def test_top_level_api():
    "`import ddpm_nb` gives the main entry points: each is the very object its chapter defines."
    import importlib
    expected = dict(Schedule='forward', Denoiser='sample', TrainConfig='train', Trainer='train', load_pretrained='fmnist',
                    save_pretrained='fmnist', evaluate_samples='metrics', evaluate_model='fmnist', FMNISTRun='fmnist',
                    make_trainer='fmnist')
    for name, mod in expected.items():
        assert name in ddpm_nb.__all__, name
        assert getattr(ddpm_nb, name) is getattr(importlib.import_module(f'ddpm_nb.{mod}'), name), name
    for name in ddpm_nb.__all__: assert getattr(ddpm_nb, name) is not None, name
    from ddpm_nb.sample import sample
    assert callable(ddpm_nb.sample) and ddpm_nb.sample.sample is sample          # module and function at once
    with pytest.raises(AttributeError): ddpm_nb.no_such_name
    r = _run('import ddpm_nb, sys; print(ddpm_nb.sample.__name__, "ddpm_nb.fmnist" in sys.modules)')
    assert r.returncode == 0 and r.stdout.split() == ['ddpm_nb.sample', 'False'], r.stdout + r.stderr   # the rest loads on use


def test_runtime_imports_are_declared_requirements():
    "Every third-party package a module imports at its top is in settings.ini's requirements (else `pip install` gives a broken package)."
    ini = (ROOT / 'settings.ini').read_text()
    reqs = re.search(r'^requirements\s*=\s*(.*)$', ini, re.M).group(1)
    declared = {re.split(r'[<>=!~ ]', r)[0].lower() for r in reqs.split()}
    dist = {'PIL': 'pillow', 'sklearn': 'scikit-learn'}
    std = set(sys.stdlib_module_names)
    used = {}
    for mod in CHAPTER_MODULES + ['__init__']:
        for node in ast.parse((PKG / f'{mod}.py').read_text()).body:      # module level: what `import` needs
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for n in names:
                top = n.split('.')[0]
                if top not in std and top != 'ddpm_nb': used.setdefault(dist.get(top, top).lower(), mod)
    missing = {k: v for k, v in used.items() if k not in declared}
    assert not missing, f'imported but not in settings.ini requirements (package: first module): {missing}'


def test_schedule_end_to_end():
    sched = forward.Schedule.from_name('cosine', 50).to(dtype=torch.float32)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    t = torch.tensor([0, 10, 25, 49])
    g = torch.Generator().manual_seed(0)
    xt = sched.q_sample(x0, t, generator=g)
    assert xt.shape == x0.shape and xt.dtype == torch.float32
    xt2 = sched.q_sample(x0, t, generator=torch.Generator().manual_seed(0))
    assert torch.equal(xt, xt2), 'the same generator seed must give the same x_t'


@pytest.mark.parametrize('call, word', [
    (lambda: forward.make_betas('linear', 0), 'T'),
    (lambda: forward.make_betas('squaredcos', 10), 'schedule name'),
    (lambda: forward.Schedule(torch.tensor([0.5, 1.0])), 'betas'),
    (lambda: forward.Schedule(torch.tensor([-0.1, 0.5])), 'betas'),
    (lambda: forward.q_sample(torch.zeros(2, 3), 1.2, torch.zeros(2, 3)), 'alpha_bar'),
    (lambda: forward.q_sample(torch.zeros(2, 3), 0.5, torch.zeros(3, 2)), 'noise'),
    (lambda: forward.Schedule.from_name('linear', 10).q_sample(torch.zeros(2, 3), torch.tensor([0, 10])), 't must lie'),
    (lambda: forward.Schedule.from_name('linear', 10).q_sample(torch.zeros(2, 3), torch.tensor([0., 1.])), 'integer'),
])
def test_bad_input_raises_value_error_naming_the_argument(call, word):
    with pytest.raises(ValueError, match=re.escape(word)):
        call()
