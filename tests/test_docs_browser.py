"""The rendered course site in docs/, opened page by page in headless Chromium.

docs/ is served on 127.0.0.1 by http.server in a thread; Chromium (Debian `chromium` +
`chromium-driver`, driven by selenium) opens every page and checks what a reader would see:
no console errors, every formula typeset by MathJax (no TeX errors, no raw `$$` left), every
image decoded, every link between pages (and its #anchor) resolving, code without nbdev
directives, the chapter sidebar in course order with the current chapter highlighted, and
previous/next links. Screenshots go to $PYTEST_ARTIFACTS (default tests/artifacts/, ignored by git).

Skipped, with the reason, when Chromium, ChromeDriver or selenium is missing, except where
DOCS_BROWSER_REQUIRED=1 or CI=true is set: there that is an error.
Rebuild the site with `python tools/build_docs.py`.
"""
import functools, http.server, os, re, shutil, sys, tempfile, threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT/'docs'
ARTIFACTS = Path(os.environ.get('PYTEST_ARTIFACTS') or ROOT/'tests'/'artifacts')
sys.path.insert(0, str(ROOT/'tools'))
import build_docs  # noqa: E402

CHROMIUM = next((p for p in map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome')) if p), None)
CHROMEDRIVER = shutil.which('chromedriver')
# CI sets DOCS_BROWSER_REQUIRED=1 (or CI=true): there a missing browser is a failure, not a skip.
REQUIRED = os.environ.get('DOCS_BROWSER_REQUIRED', os.environ.get('CI', '')).lower() in ('1', 'true', 'yes')
try: import selenium  # noqa: F401
except ImportError: selenium = None
_missing = [m for m, ok in (('Debian `chromium`', CHROMIUM), ('Debian `chromium-driver`', CHROMEDRIVER),
                            ('the Python package `selenium`', selenium)) if not ok]
if _missing:
    _why = (f'the browser tests of docs/ need {", ".join(_missing)} '
            '(apt-get install -y chromium chromium-driver; pip install -e ".[dev]")')
    if REQUIRED: raise RuntimeError(_why + ' and DOCS_BROWSER_REQUIRED/CI is set')
    pytest.skip(_why, allow_module_level=True)

PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob('*.html')
               if p.relative_to(DOCS).parts[0] not in build_docs.KEEP)


def course():
    "(notebook, page) pairs in course order, as the build sees them."
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        nbs = ROOT/'nbs'
        return [(nb, build_docs.page_path(nb, nbs)) for nb in build_docs.find_notebooks(nbs)]
    finally: os.chdir(cwd)


class _Handler(http.server.SimpleHTTPRequestHandler):
    errors = []                                   # (status, path) of every failed request
    def log_message(self, *args): pass
    def send_error(self, code, *args, **kwargs):
        type(self).errors.append((code, self.path))
        return super().send_error(code, *args, **kwargs)


@pytest.fixture(scope='module')
def server():
    if not PAGES: pytest.fail('docs/ holds no pages: run `python tools/build_docs.py`')
    handler = functools.partial(_Handler, directory=str(DOCS))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}/'
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope='module')
def browser():
    os.environ.setdefault('SE_OFFLINE', 'true')        # selenium must not try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix='ddpm_nb_chromium_')
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ('--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
              '--disable-quic', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
              '--hide-scrollbars', '--window-size=1280,900', f'--user-data-dir={profile}'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


_WAIT_MATHJAX = """
const done = arguments[arguments.length - 1];
const t0 = Date.now();
(function poll() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise)
    MathJax.startup.promise.then(() => done('ok'), e => done('MathJax failed: ' + e));
  else if (Date.now() - t0 > 30000) done('MathJax never started');
  else setTimeout(poll, 50);
})();
"""

_INSPECT = r"""
const vis = document.body.cloneNode(true);
vis.querySelectorAll('pre, code, script, style, mjx-container, textarea').forEach(e => e.remove());
const text = vis.textContent;
return {
  title: document.title,
  mathjax: document.querySelectorAll('mjx-container').length,
  merror: Array.from(MathJax.startup.document.math)
    .filter(m => m.typesetRoot && m.typesetRoot.querySelector('mjx-merror, [data-mjx-error]'))
    .map(m => JSON.stringify(m.math) + ': ' + m.typesetRoot.querySelector('mjx-merror, [data-mjx-error]').getAttribute('data-mjx-error'))
    .slice(0, 5),
  rawDisplay: (text.match(/\$\$[^$]{0,60}/g) || []).slice(0, 5),
  rawInline: (text.match(/\$[^$\s][^$]{0,80}?[\\_^{}][^$]{0,80}?\$/g) || []).slice(0, 5),
  rawEnv: (text.match(/\\begin\{[a-z*]+\}/g) || []).slice(0, 5),
  images: Array.from(document.images).map(i => ({src: i.getAttribute('src').slice(0, 60), ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth})),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  directives: Array.from(document.querySelectorAll('pre')).map(p => p.textContent).filter(t => /^\s*#\|/m.test(t)).map(t => t.slice(0, 80)),
  sidebar: Array.from(document.querySelectorAll('nav.sidebar ol.chapters > li > a')).map(a => a.getAttribute('href')),
  current: Array.from(document.querySelectorAll('nav.sidebar li.current > a')).map(a => a.getAttribute('href')),
  prev: (document.querySelector('.pager a[rel=prev]') || {}).href || null,
  next: (document.querySelector('.pager a[rel=next]') || {}).href || null,
  docs: document.querySelectorAll('.output.doc').length,
  h1: (document.querySelector('h1') || {}).textContent || '',
};
"""


def open_page(browser, url):
    browser.get_log('browser')                              # drop what earlier pages logged
    browser.get(url)
    assert browser.execute_async_script(_WAIT_MATHJAX) == 'ok', url
    return browser.execute_script(_INSPECT)


def _ids_of(page: str) -> set:
    return set(re.findall(r'\bid="([^"]+)"', (DOCS/page).read_text(encoding='utf-8')))


def test_one_page_per_notebook_in_course_order():
    pairs = course()
    assert pairs and pairs[0][1] == 'index.html', 'the index notebook must come first'
    missing = [f'{nb.name} -> {page}' for nb, page in pairs if not (DOCS/page).is_file()]
    assert not missing, f'pages missing from docs/ (run `python tools/build_docs.py`): {missing}'
    extra = sorted(set(PAGES) - {page for _, page in pairs})
    assert not extra, f'pages in docs/ that no notebook makes: {extra}'


@pytest.mark.parametrize('page', PAGES)
def test_page(page, server, browser):
    _Handler.errors.clear()
    url = urljoin(server, page)
    info = open_page(browser, url)
    errors = [e['message'] for e in browser.get_log('browser') if e['level'] == 'SEVERE']
    assert not errors, f'{page}: console errors: {errors}'
    assert not _Handler.errors, f'{page}: failed requests: {_Handler.errors}'

    # maths: typeset, without TeX errors, nothing raw left in the text
    assert not info['merror'], f'{page}: MathJax could not typeset: {info["merror"]}'
    assert not info['rawDisplay'] and not info['rawEnv'], f'{page}: untypeset display maths: {info["rawDisplay"] + info["rawEnv"]}'
    assert not info['rawInline'], f'{page}: untypeset inline maths: {info["rawInline"]}'
    source = (DOCS/page).read_text(encoding='utf-8')
    if re.search(r'\$[^$\s]', re.sub(r'<(pre|code|script)\b.*?</\1>', '', source, flags=re.S)):
        assert info['mathjax'] > 0, f'{page}: the page has maths but MathJax typeset none'

    # images decoded
    bad = [i for i in info['images'] if not i['ok']]
    assert not bad, f'{page}: images that did not load: {bad}'

    # code shows no nbdev directives
    assert not info['directives'], f'{page}: code with `#|` directives: {info["directives"]}'

    # links between pages resolve, anchors included
    origin = urlsplit(server).netloc
    broken = []
    for href in info['links']:
        u = urlsplit(href)
        if u.scheme not in ('http', 'https') or u.netloc != origin: continue
        target = unquote(u.path).lstrip('/') or 'index.html'
        if target.endswith('/'): target += 'index.html'
        if not (DOCS/target).is_file(): broken.append(href); continue
        if u.fragment and target.endswith('.html'):
            ids = set(info['ids']) if target == page else _ids_of(target)
            if unquote(u.fragment) not in ids: broken.append(href)
    assert not broken, f'{page}: broken links: {sorted(set(broken))[:10]}'

    # sidebar: every chapter in course order, this one highlighted; previous / next
    order = [p for _, p in course()]
    depth = '../' * page.count('/')
    assert info['sidebar'] == [depth + p for p in order], f'{page}: sidebar {info["sidebar"]} is not the course order {order}'
    assert info['current'] == [depth + page], f'{page}: highlighted {info["current"]}'
    i = order.index(page)
    assert info['prev'] == (urljoin(url, depth + order[i - 1]) if i > 0 else None), f'{page}: previous link {info["prev"]}'
    assert info['next'] == (urljoin(url, depth + order[i + 1]) if i + 1 < len(order) else None), f'{page}: next link {info["next"]}'
    assert info['h1'].strip(), f'{page}: no title'


def test_chapter_one_shows_figures_animation_and_api_docs(server, browser):
    info = open_page(browser, urljoin(server, 'forward.html'))
    srcs = [i['src'] for i in info['images']]
    assert any(s.startswith('data:image/gif') for s in srcs), 'the forward-process animation (GIF) is missing'
    assert sum(s.startswith(('data:image/png', 'data:image/jpeg')) for s in srcs) >= 2, f'figures missing: {srcs}'
    assert info['mathjax'] > 50, f'only {info["mathjax"]} formulas typeset'
    assert info['docs'] >= 5, f'only {info["docs"]} API doc blocks (show_doc) rendered'
    # an API doc block carries the signature and the docstring of an exported function
    block = browser.execute_script("return document.getElementById('q_sample').closest('.output.doc').innerText")
    assert 'def q_sample' in block and 'alpha_bar' in block and 'Closed-form forward sample' in block, block
    # hidden cells stay hidden: the notebook's `#| hide` imports never show
    assert 'from fastcore.test import' not in browser.page_source


def test_screenshots(server, browser):
    "Screenshots for a person to look at: the index, and chapter 1 at its top, a figure and an API doc."
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = []
    open_page(browser, urljoin(server, 'index.html'))
    browser.save_screenshot(str(ARTIFACTS/'docs_index.png')); shots.append('docs_index.png')
    open_page(browser, urljoin(server, 'forward.html'))
    browser.save_screenshot(str(ARTIFACTS/'docs_forward_top.png')); shots.append('docs_forward_top.png')
    for name, js in (('docs_forward_figure.png', "document.querySelector('.output.image img')"),
                     ('docs_forward_api.png', "document.getElementById('q_sample').closest('.output.doc')")):
        browser.execute_script(f"{js}.scrollIntoView({{block: 'center'}})")
        browser.save_screenshot(str(ARTIFACTS/name)); shots.append(name)
    for s in shots: assert (ARTIFACTS/s).stat().st_size > 10_000, s


def test_code_and_outputs_get_a_wide_column(server, browser):
    "In a 1280 px window, a code cell spans at least 70% of the window (it was about 60% with a prose-width column)."
    open_page(browser, urljoin(server, 'forward.html'))
    w, win = browser.execute_script("return [document.querySelector('.cell-input pre').getBoundingClientRect().width, "
                                    "window.innerWidth]")
    assert w >= 0.7 * win, f'code blocks are {w:.0f} px wide in a {win} px window'
