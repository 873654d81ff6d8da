"""The course site and the notebooks it is built from, read as files (no browser needed).

No page of docs/ and no stored notebook output may show an absolute path of the machine that executed or built it
(a temporary folder, a home directory, a checkout): such a path means nothing to a reader and leaks the build machine.
The code a reader is shown (cell inputs, fenced code in the prose) may name example paths; outputs and prose may not.
"""
import html, json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'
NBS = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))
PAGES = sorted(p for p in DOCS.glob('*.html'))
# an absolute path of a build machine: /work/..., /root/..., /tmp/..., /home/..., /Users/..., /private/var/...,
# /var/folders/... (not /usr/share/..., which is where Debian packages put their data)
MACHINE_PATH = re.compile(r'(?<![\w.~/-])/(?:work|root|tmp|home|Users|private/var|var/folders|scratch)/[\w.~+-]')


def machine_paths(text: str) -> list:
    return sorted({text[max(0, m.start() - 30): m.end() + 40].replace('\n', ' ') for m in MACHINE_PATH.finditer(text)})


def test_pattern_catches_build_paths_and_spares_others():
    assert machine_paths("error: /tmp/tmpor5ryobj/run/checkpoint.pt exists")
    assert machine_paths("PosixPath('/root/.cache/ddpm_nb')") and machine_paths('/work/main/ddpm_nb/train.py:474: UserWarning')
    assert machine_paths('see /home/ann/x') and machine_paths('/Users/ann/x')
    assert not machine_paths('apt-get puts them in /usr/share/datasets/fashion-mnist/')
    assert not machine_paths('~/.cache/ddpm_nb and runs/tmp/x and https://example.org/home/page')


def _page_text(page: Path) -> str:
    src = page.read_text(encoding='utf-8')
    src = re.sub(r'<pre>.*?</pre>', '', src, flags=re.S)            # code a reader is shown (cell inputs, fenced code)
    src = re.sub(r'<(script|style)\b.*?</\1>', '', src, flags=re.S)
    return html.unescape(re.sub(r'<[^>]+>', ' ', src))


@pytest.mark.skipif(not PAGES, reason='docs/ holds no pages')
@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_no_page_shows_a_build_machine_path(page):
    bad = machine_paths(_page_text(page))
    assert not bad, (f'{page.name} shows absolute paths of the build machine: {bad[:5]}. Print paths relative to the '
                     'working folder (or a placeholder) in the notebook, re-execute it, then rebuild docs/.')


def _outputs_text(cell) -> str:
    out = []
    for o in cell.get('outputs', []):
        if 'text' in o: out.append(''.join(o['text']))
        for k, v in o.get('data', {}).items():
            if k.startswith('text/') or k == 'application/json': out.append(''.join(v) if isinstance(v, list) else str(v))
        if o.get('output_type') == 'error': out.append('\n'.join(o.get('traceback', [])))
    return '\n'.join(out)


@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_no_notebook_output_shows_a_build_machine_path(nb):
    cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
    bad = [(i, s) for i, c in enumerate(cells) for s in machine_paths(_outputs_text(c))]
    bad += [(i, s) for i, c in enumerate(cells) if c['cell_type'] == 'markdown'
            for s in machine_paths(re.sub(r'```.*?```', '', ''.join(c['source']), flags=re.S))]
    assert not bad, f'{nb.name}: stored outputs or prose show absolute paths of the machine that ran it (cell, text): {bad[:5]}'


def test_stylesheet_gives_code_a_wide_column():
    "Prose keeps a readable line; code, outputs and figures get more room (at least 75rem of content width)."
    css = (ROOT / 'tools' / 'docs_site' / 'style.css').read_text()
    wide = float(re.search(r'--wide:\s*([\d.]+)rem', css).group(1))
    column = float(re.search(r'--column:\s*([\d.]+)rem', css).group(1))
    assert wide >= 75 and column <= 52, (wide, column)
    assert re.search(r'\.content\s*\{[^}]*max-width:\s*calc\(var\(--wide\)', css), 'the content area must use --wide'
