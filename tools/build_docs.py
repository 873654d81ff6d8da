#!/usr/bin/env python
"""Build the course website in `docs/` from the notebooks in `nbs/`, offline, with no Quarto.

    python tools/build_docs.py            # rebuild docs/ (one page per notebook, in course order)
    python tools/build_docs.py --check    # rebuild into a temporary folder; exit 1 if docs/ differs

How it works. Each notebook goes through nbdev's own documentation processors (the ones
`nbdev_proc_nbs` runs before Quarto: front matter, `#| hide`, `#| export`, the show_doc cells
it inserts after exported definitions, links to the API docs, "Exported source" folds), then
this script renders the processed cells to HTML with mistune (via nbconvert's math-aware
Markdown) and Pygments, and puts them into `tools/docs_site/page.html.j2`.

No notebook cell is executed: code outputs (figures, animations, tables) are the outputs saved
in the notebooks, and the show_doc cells are rendered with nbdev's `show_doc` from the exported
package (`ddpm_nb/*.py`, which CI keeps identical to the notebooks).

The built site is committed (GitHub Pages can serve `docs/` as it stands) and CI runs
`--check`, which fails when `docs/` is stale. The output is deterministic (no timestamps, ids
derived from the text, doc links looked up in this package only), so the check is exact; it also
checks that `nbs/nbdev.yml` is what nbdev itself generates from settings.ini.

MathJax 3 is served from `docs/mathjax/`: the 25 files of the npm package `mathjax@3.2.2` that
`tex-chtml-full.js` needs (1.7 MB), committed with the site and pinned by sha256 in
`tools/docs_site/mathjax.sha256`. If they are missing or altered, the build fetches the package
with `npm pack` (the npm registry, no other network) and verifies every file against the pins.

Quarto. `nbdev_docs` (where Quarto is installed) still renders nbdev's own site from
`nbs/_quarto.yml` and `nbs/nbdev.yml` into settings.ini's `doc_path`; if that is `docs` it
replaces this site there (run this script again afterwards), with `doc_path = _docs` the two
live side by side. See tools/docs_site/README.md.
"""
from __future__ import annotations

import argparse, ast, difflib, hashlib, html, importlib, inspect, os, posixpath, re, shutil, subprocess
import sys, tarfile, tempfile, time, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(__file__).resolve().parent/'docs_site'
MATHJAX_VERSION = '3.2.2'
MATHJAX_DIR = 'mathjax'                                    # inside docs/
KEEP = {MATHJAX_DIR, 'CNAME'}                              # top-level entries in docs/ the page build leaves alone
DOCS = ROOT/'docs'                                         # always docs/, whatever settings.ini's doc_path says
_re_ctrl = re.compile(r'[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')
_re_leading_dirs = re.compile(r'^(\s*#\|.*\n?)+')


# ---------------------------------------------------------------------------------------------
# notebooks and course order
# ---------------------------------------------------------------------------------------------
def find_notebooks(nbs: Path) -> list[Path]:
    "Notebooks of the course in order: the top-level index first, then by path (= filename order)."
    def skip(p):
        rel = p.relative_to(nbs).parts
        return any(o.startswith(('_', '.')) for o in rel) or '.ipynb_checkpoints' in rel
    nbs_ = [p for p in nbs.rglob('*.ipynb') if not skip(p)]
    return sorted(nbs_, key=lambda p: (p.relative_to(nbs) != Path('index.ipynb'), p.relative_to(nbs).as_posix()))


def page_path(nb: Path, nbs: Path) -> str:
    "The page a notebook becomes, as nbdev/Quarto name it (`01_forward.ipynb` -> `forward.html`)."
    from nbdev.frontmatter import _nbpath2html
    return (nb.relative_to(nbs).parent/_nbpath2html(nb).name).as_posix()


def chapter_label(nb: Path) -> str:
    "The chapter number shown in the sidebar: `01_forward` -> `1`, `06b_toy` -> `6b`, index -> ``."
    m = re.match(r'^(\d+)([a-z]?)_', nb.name)
    return f'{int(m.group(1))}{m.group(2)}' if m else ''


# ---------------------------------------------------------------------------------------------
# nbdev processing (no cell is executed)
# ---------------------------------------------------------------------------------------------
def _nb_modules(nb) -> list[str]:
    "Modules a notebook exports to (`#| default_exp` and `#| export <module>`), default last."
    lib = _cfg().lib_name
    mods, default = [], None
    for c in nb.cells:
        if c.cell_type != 'code': continue
        for line in c.source.splitlines():
            m = re.match(r'^\s*#\|\s*(\w+):?\s*(.*?)\s*$', line)
            if not m: break
            d, arg = m.groups()
            if d == 'default_exp' and arg: default = arg
            elif d in ('export', 'exports', 'exporti') and arg and not arg.startswith('-'): mods.append(arg)
    names = list(dict.fromkeys(mods + ([default] if default else [])))
    return [f'{lib}.{o}' for o in names]


def _lookup():
    "nbdev's symbol lookup restricted to this package: other installed nbdev libraries don't change the pages."
    from nbdev.doclinks import NbdevLookup
    return NbdevLookup(incl_libs=_cfg().lib_name)


def _cfg():
    from nbdev.config import get_config
    return get_config()


def _source_line(obj) -> int | None:
    try: return inspect.getsourcelines(inspect.unwrap(obj))[1]
    except Exception: return None


def _render_show_doc(ns: dict, call: str, lookup) -> str:
    "Evaluate one `show_doc(...)` call in the package namespace and return its Markdown."
    from nbdev.showdoc import show_doc
    rendered = []
    def collect(sym, *args, **kwargs):
        r = show_doc(sym, *args, **kwargs)
        if r is not None: rendered.append((sym, r))
    exec(compile(call, '<show_doc>', 'exec'), {**ns, 'show_doc': collect})
    out = []
    for sym, r in rendered:
        md = r._repr_markdown_()
        line = _source_line(sym)
        # nbdev 2.4's NbdevLookup.code() cannot find line numbers in these modules: put the real one.
        md = md.replace('#LNone', f'#L{line}' if line else '')
        out.append(lookup.linkify(md))
    return '\n'.join(out)


def process_notebook(path: Path):
    "Run nbdev's documentation processors on one notebook; show_doc outputs come from the package."
    from execnb.nbio import read_nb
    from fastcore.basics import AttrDict
    from nbdev.process import NBProcessor, Processor
    from nbdev.processors import FilterDefaults, add_links, exec_show_docs, insert_warning, _is_showdoc

    nb = read_nb(path)
    nb.path_ = str(path)
    modules = _nb_modules(nb)

    class show_docs_from_package(Processor):
        "Fill in show_doc outputs by rendering the exported objects (instead of running notebook cells)."
        def begin(self):
            self.ns = {}
            for m in modules:
                try: self.ns.update(vars(importlib.import_module(m)))
                except Exception as e: raise RuntimeError(f'{path.name}: cannot import {m} ({e}); run nbdev_export') from e
            self.lookup = _lookup()

        def cell(self, cell):
            if cell.cell_type != 'code' or not _is_showdoc(cell): return
            src = _re_leading_dirs.sub('', cell.source)
            try: tree = ast.parse(src)
            except SyntaxError: return
            if not all(isinstance(o, ast.Expr) and isinstance(o.value, ast.Call) and getattr(o.value.func, 'id', '') == 'show_doc'
                       for o in tree.body): return            # not a plain show_doc cell: keep its saved outputs
            try: md = _render_show_doc(self.ns, src, self.lookup)
            except Exception as e:
                if cell.get('outputs'): return                # an author's own show_doc cell: its saved output stands
                raise RuntimeError(f'{path.name}: cannot render `{src.strip()}` from the package ({e!r}); '
                                   'run nbdev_export') from e
            cell.outputs = [AttrDict(output_type='display_data', metadata=AttrDict(),
                                     data=AttrDict({'text/markdown': md.splitlines(True)}))]

    def links_to_this_package(cell):
        "nbdev's `add_links`, with names looked up in this package only (the same links in every environment)."
        nl = _lookup()
        if cell.cell_type == 'markdown': cell.source = nl.linkify(cell.source)
        for o in cell.get('outputs', []):
            if hasattr(o, 'data') and hasattr(o['data'], 'text/markdown'):
                o.data['text/markdown'] = [nl.link_line(s) for s in o.data['text/markdown']]

    procs = [links_to_this_package if p is add_links else p
             for p in FilterDefaults().procs() if p not in (exec_show_docs, insert_warning)]
    assert links_to_this_package in procs, 'nbdev no longer has add_links: update tools/build_docs.py'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        NBProcessor(nb=nb, procs=procs + [show_docs_from_package]).process()
    return nb


# ---------------------------------------------------------------------------------------------
# Markdown and code to HTML
# ---------------------------------------------------------------------------------------------
def pandoc_id(text: str) -> str:
    "Pandoc's automatic heading identifier (what Quarto and nbdev's doc links use)."
    s = html.unescape(re.sub(r'<[^>]+>', '', text)).strip().lower()
    s = re.sub(r'[^\w\s.-]', '', s)
    s = re.sub(r'\s+', '-', s)
    s = re.sub(r'^[\W\d_]+', '', s)
    return s or 'section'


def highlight_code(code: str, lang: str = 'python') -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound
    try: lexer = get_lexer_by_name(lang or 'text')
    except ClassNotFound: lexer = get_lexer_by_name('text')
    return highlight(code, lexer, HtmlFormatter(cssclass='highlight', wrapcode=True))


class Renderer:
    "Markdown -> HTML for one page: math kept for MathJax, heading ids, links made local."
    def __init__(self, site: 'Site', page: str):
        from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
        outer = self
        self.site, self.page, self.ids, self.toc = site, page, {}, []

        class R(IPythonRenderer):
            def heading(self, text, level, **attrs):
                hid = outer.unique_id(pandoc_id(text))
                if level in (2, 3) and not outer.in_doc: outer.toc.append((level, hid, text))
                return (f'<h{level} id="{hid}">{text}<a class="anchor" href="#{hid}" aria-label="Link to this section">#</a>'
                        f'</h{level}>\n')
            def block_code(self, code, info=None):
                lang = (info or '').strip().split(maxsplit=1)[0] if (info or '').strip() else 'text'
                return highlight_code(code, lang)
            def link(self, text, url, title=None):
                return super().link(text, outer.site.local_url(url, outer.page), title)
            def image(self, text, url, title=None):
                return super().image(text, outer.site.local_asset(url, outer.page), title)

        self.md = MarkdownWithMath(renderer=R(escape=False, exclude_anchor_links=True))
        self.in_doc = False

    def unique_id(self, hid):
        n = self.ids.get(hid, 0)
        self.ids[hid] = n + 1
        return hid if n == 0 else f'{hid}-{n}'

    def markdown(self, src: str, in_doc=False) -> str:
        self.in_doc = in_doc
        src = _fenced_divs(src)
        # Quarto-only link attributes ([source](url){target="_blank" ...}) from show_doc
        src = re.sub(r'\[source\]\(([^)\s]+)\)\{[^}]*\}', r'<a class="source-link" href="\1">source</a>', src)
        src = re.sub(r'(\]\([^)\s]+\))\{[^}\n]*\}', r'\1', src)
        try: return self.md.render(src)
        finally: self.in_doc = False


def _fenced_divs(src: str) -> str:
    "Quarto/Pandoc fenced divs (`::: {.callout-note}` ... `:::`) -> HTML divs around Markdown."
    out = []
    for line in src.splitlines():
        m = re.match(r'^:::+\s*(\{([^}]*)\}|[\w-]+)?\s*$', line)
        if not m: out.append(line); continue
        if m.group(1) is None: out += ['', '</div>', '']; continue
        classes = re.findall(r'\.([\w-]+)', m.group(2) or '') or [m.group(1)]
        out += ['', f'<div class="{" ".join(classes)}">', '']
    return '\n'.join(out)


def _text(x) -> str: return ''.join(x) if isinstance(x, list) else (x or '')


def _collapse_cr(s: str) -> str:
    "What a terminal shows for text with carriage returns (progress bars)."
    return '\n'.join(line.rsplit('\r', 1)[-1] if '\r' in line.rstrip('\r') else line.rstrip('\r') for line in s.split('\n'))


def render_output(o, r: Renderer) -> str:
    from nbconvert.filters.ansi import ansi2html
    t = o.get('output_type')
    if t == 'stream':
        cls = 'stderr' if o.get('name') == 'stderr' else 'stdout'
        return f'<pre class="output {cls}">{ansi2html(_collapse_cr(_text(o.get("text"))))}</pre>'
    if t == 'error':
        return f'<pre class="output error">{ansi2html(chr(10).join(o.get("traceback") or []))}</pre>'
    data, meta = o.get('data') or {}, o.get('metadata') or {}
    if 'application/vnd.jupyter.widget-view+json' in data: return ''   # a live widget (tqdm.auto): nothing to show
    for mime in ('text/markdown', 'text/html', 'image/svg+xml', 'image/png', 'image/jpeg', 'image/gif', 'text/latex', 'text/plain'):
        if mime not in data: continue
        v = _text(data[mime])
        if mime == 'text/markdown':
            doc = v.lstrip().startswith('---') and '### ' in v
            body = r.markdown(v, in_doc=doc)
            return f'<div class="output doc">{body}</div>' if doc else f'<div class="output markdown">{body}</div>'
        if mime == 'text/html': return f'<div class="output html">{v}</div>'
        if mime == 'image/svg+xml': return f'<div class="output image">{v}</div>'
        if mime.startswith('image/'):
            b64 = re.sub(r'\s+', '', v)
            m = meta.get(mime) or {}
            size = ''.join(f' {k}="{int(m[k])}"' for k in ('width', 'height') if isinstance(m.get(k), (int, float)))
            return f'<div class="output image"><img src="data:{mime};base64,{b64}" alt="figure"{size}></div>'
        if mime == 'text/latex': return f'<div class="output latex">{html.escape(v, quote=False)}</div>'
        return f'<pre class="output text">{html.escape(v, quote=False)}</pre>'
    return ''


def _cell_options(src: str):
    "Split leading Quarto cell options (`#| echo: false`) from the code."
    opts, lines = {}, src.splitlines()
    i = 0
    while i < len(lines) and re.match(r'^\s*#\|', lines[i]):
        m = re.match(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$', lines[i])
        if m: opts[m.group(1)] = m.group(2).strip('"\'')
        i += 1
    return opts, '\n'.join(lines[i:]).strip('\n')


def render_cell(cell, r: Renderer, lang: str) -> str:
    if cell.cell_type == 'markdown':
        bad = sorted(set(_re_ctrl.findall(_text(cell.source))))
        if bad:
            ctx = _re_ctrl.sub(lambda m: f'<U+{ord(m.group()):04X}>', _text(cell.source))
            at = re.search(r'.{0,30}<U\+[0-9A-F]{4}>.{0,30}', ctx)
            r.site.warn(f'{r.page}: Markdown cell holds control characters ({", ".join(f"U+{ord(c):04X}" for c in bad)}): '
                        f'"{at.group() if at else ""}". A `\\b` or `\\a` written into a non-raw Python string '
                        'while editing the notebook? Fix the notebook.')
        return f'<div class="cell markdown">\n{r.markdown(_text(cell.source))}</div>'
    if cell.cell_type == 'raw':
        fmt = (cell.get('metadata') or {}).get('format', '') or (cell.get('metadata') or {}).get('raw_mimetype', '')
        return f'<div class="cell raw">{_text(cell.source)}</div>' if 'html' in fmt else ''
    if cell.cell_type != 'code': return ''
    opts, code = _cell_options(_text(cell.source))
    false = ('false', 'False', 'no')
    if opts.get('include') in false: return ''
    parts = []
    if code.strip() and opts.get('echo') not in false:
        src = highlight_code(code, cell_lang(cell, lang))
        if 'code-fold' in opts:
            summary = html.escape(opts.get('code-summary') or 'Code')
            src = f'<details class="code-fold"{" open" if opts["code-fold"] == "show" else ""}><summary>{summary}</summary>{src}</details>'
        parts.append(f'<div class="cell-input">{src}</div>')
    if opts.get('output') not in false:
        outs = [render_output(o, r) for o in cell.get('outputs', [])]
        outs = [o for o in outs if o]
        if outs: parts.append('<div class="cell-output">\n' + '\n'.join(outs) + '\n</div>')
    if not parts: return ''
    return '<div class="cell code">\n' + '\n'.join(parts) + '\n</div>'


def cell_lang(cell, default='python'):
    return ((cell.get('metadata') or {}).get('language') or default)


# ---------------------------------------------------------------------------------------------
# the site
# ---------------------------------------------------------------------------------------------
class Site:
    def __init__(self, root: Path, out: Path):
        self.root, self.out = root, out
        cfg = _cfg()
        self.cfg = cfg
        self.nbs = Path(cfg.nbs_path)
        self.notebooks = find_notebooks(self.nbs)
        self.pages = {nb: page_path(nb, self.nbs) for nb in self.notebooks}
        by_name = {nb.relative_to(self.nbs).as_posix(): p for nb, p in self.pages.items()}
        self.nb_to_page = by_name
        self.doc_url = f"{cfg.get('doc_host', '').rstrip('/')}{cfg.get('doc_baseurl', '').rstrip('/')}/"
        self.assets = {}                                        # files copied from nbs/ (markdown images)
        self.warnings = []

    def warn(self, msg: str):
        self.warnings.append(msg)

    @staticmethod
    def rel(target: str, page: str) -> str:
        "`target` (relative to docs/) as seen from `page`."
        depth = page.count('/')
        return '../' * depth + target

    def local_url(self, url: str, page: str) -> str:
        "Links to this site's own pages (absolute doc URLs, `.ipynb` links) made relative."
        if self.doc_url != '/' and url.startswith(self.doc_url): return self.rel(url[len(self.doc_url):], page)
        m = re.match(r'^(?!\w+:)([^#?]+\.ipynb)(#.*)?$', url)
        if m:
            src_page_dir = Path(page).parent
            nbrel = os.path.normpath((src_page_dir/m.group(1)).as_posix())
            if nbrel in self.nb_to_page: return self.rel(self.nb_to_page[nbrel], page) + (m.group(2) or '')
        return url

    def local_asset(self, url: str, page: str) -> str:
        "Relative image files next to a notebook are copied into docs/ at the same relative place."
        if re.match(r'^(\w+:|/|#)', url): return url
        src = (self.nbs/Path(page).parent/url).resolve()
        try: rel = src.relative_to(self.nbs.resolve()).as_posix()
        except ValueError: return url
        if src.is_file(): self.assets[rel] = src
        return url

    def build(self, verbose=True):
        import jinja2
        from pygments.formatters import HtmlFormatter
        t0 = time.time()
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(SITE)), autoescape=True,
                                 keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
        tmpl = env.get_template('page.html.j2')
        chapters = []
        for nb in self.notebooks:
            t1 = time.time()
            pnb = process_notebook(nb)
            fm = getattr(pnb, 'frontmatter_', {}) or {}
            page = self.pages[nb]
            r = Renderer(self, page)
            lang = ((pnb.get('metadata') or {}).get('kernelspec') or {}).get('language', 'python')
            cells = [c for c in pnb.cells if not (c.cell_type == 'raw' and _text(c.source).lstrip().startswith('---'))]
            body = '\n'.join(o for o in (render_cell(c, r, lang) for c in cells) if o)
            title = str(fm.get('title') or nb.stem)
            chapters.append(dict(nb=nb, page=page, title=title, description=fm.get('description', ''),
                                 label=chapter_label(nb), body=body, toc=r.toc,
                                 src=nb.relative_to(self.root).as_posix(),
                                 title_html=r.md.render(title).strip().removeprefix('<p>').removesuffix('</p>'),
                                 desc_html=r.md.render(str(fm.get('description', ''))).strip().removeprefix('<p>').removesuffix('</p>')))
            if verbose: print(f'  {nb.relative_to(self.root)} -> docs/{page}  ({time.time() - t1:.1f} s)')

        self.fix_links(chapters)
        site_title = self.cfg.get('title', self.cfg.lib_name)
        git_url = self.cfg.get('git_url', '')
        branch = self.cfg.get('branch', 'main')
        generator = 'tools/build_docs.py (nbdev processors, mistune, Pygments, MathJax)'
        for i, ch in enumerate(chapters):
            page = ch['page']
            link = lambda target, _p=page: self.rel(target, _p)
            nav = [dict(href=link(c['page']), title=c['title'] if c['label'] or c['title'] != site_title else 'Introduction',
                        label=c['label'], current=c is ch, toc=c['toc'] if c is ch else []) for c in chapters]
            prev = chapters[i - 1] if i > 0 else None
            nxt = chapters[i + 1] if i + 1 < len(chapters) else None
            def pn(c):
                if c is None: return None
                return dict(href=link(c['page']), label=c['label'],
                            title=c['title'] if c['label'] or c['title'] != site_title else 'Introduction')
            out = tmpl.render(site_title=site_title, ch=ch, nav=nav, prev=pn(prev), next=pn(nxt),
                              root=link(''), index=link(chapters[0]['page']) if chapters else 'index.html',
                              repo_url=git_url, source_url=f'{git_url}/blob/{branch}/{ch["src"]}' if git_url else '',
                              mathjax=link(f'{MATHJAX_DIR}/tex-chtml-full.js'), generator=generator,
                              is_index=(i == 0))
            self.write(page, out)

        self.write('assets/style.css', (SITE/'style.css').read_text())
        self.write('assets/pygments.css', HtmlFormatter(style='friendly').get_style_defs('.highlight') + '\n')
        self.write('assets/favicon.svg', (SITE/'favicon.svg').read_text())
        self.write('.nojekyll', '')
        for rel, src in sorted(self.assets.items()): self.write(rel, src.read_bytes())
        if verbose: print(f'built {len(chapters)} pages in {time.time() - t0:.1f} s')
        for w in self.warnings: print(f'WARNING: {w}', file=sys.stderr)

    def fix_links(self, chapters):
        """Links into the site whose #anchor does not exist. nbdev links every backticked name that
        `_modidx.py` knows, private helpers included, but only public names get an API doc block (the
        anchor): such a link is turned back into plain code. Any other dangling link is a warning."""
        ids = {c['page']: set(re.findall(r'\bid="([^"]+)"', c['body'])) | {'content'} for c in chapters}
        def target(href, page):
            u = re.match(r'^([^:#?]*\.html)?#(.+)$', href)
            if not u: return None
            t = posixpath.normpath(posixpath.join(posixpath.dirname(page), u.group(1))) if u.group(1) else page
            return t, html.unescape(u.group(2))
        for c in chapters:
            def sym(m, page=c['page']):
                t = target(html.unescape(m.group(1)), page)
                if t and t[0] in ids and t[1] not in ids[t[0]]: return m.group(2)
                return m.group(0)
            c['body'] = re.sub(r'<a href="([^"]+)">(<code>[^<]*</code>)</a>', sym, c['body'])
            for href in re.findall(r'<a\b[^>]*\bhref="([^"]+)"', c['body']):
                t = target(html.unescape(href), c['page'])
                if t and t[0] in ids and t[1] not in ids[t[0]]:
                    self.warn(f'{c["page"]}: link to {href}: no such anchor')
                elif t and t[0] not in ids: self.warn(f'{c["page"]}: link to {href}: no such page')

    def write(self, rel: str, content):
        p = self.out/rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str): content = content.encode('utf-8')
        p.write_bytes(content)


# ---------------------------------------------------------------------------------------------
# MathJax (vendored, pinned by hash)
# ---------------------------------------------------------------------------------------------
def mathjax_manifest() -> dict[str, str]:
    res = {}
    for line in (SITE/'mathjax.sha256').read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            h, rel = line.split(maxsplit=1)
            res[rel.strip()] = h
    return res


def _sha256(p: Path) -> str: return hashlib.sha256(p.read_bytes()).hexdigest()


def mathjax_problems(docs: Path) -> list[str]:
    "What is wrong with docs/mathjax compared with the pinned manifest (empty: all good)."
    man, d = mathjax_manifest(), docs/MATHJAX_DIR
    probs = [f'{MATHJAX_DIR}/{rel}: missing' for rel in man if not (d/rel).is_file()]
    probs += [f'{MATHJAX_DIR}/{rel}: sha256 differs from tools/docs_site/mathjax.sha256'
              for rel, h in man.items() if (d/rel).is_file() and _sha256(d/rel) != h]
    if d.is_dir():
        extra = sorted(p.relative_to(d).as_posix() for p in d.rglob('*') if p.is_file())
        probs += [f'{MATHJAX_DIR}/{rel}: not in the manifest' for rel in extra if rel not in man]
    return probs


def install_mathjax(docs: Path):
    "Put the pinned MathJax files into docs/mathjax, from the npm registry (`npm pack mathjax@3.2.2`)."
    man = mathjax_manifest()
    npm = shutil.which('npm')
    if not npm: sys.exit(f'docs/{MATHJAX_DIR} is missing or modified and npm is not installed to fetch mathjax@{MATHJAX_VERSION}')
    with tempfile.TemporaryDirectory() as td:
        subprocess.run([npm, 'pack', f'mathjax@{MATHJAX_VERSION}', '--silent'], cwd=td, check=True, stdout=subprocess.DEVNULL)
        tgz = Path(td)/f'mathjax-{MATHJAX_VERSION}.tgz'
        d = docs/MATHJAX_DIR
        shutil.rmtree(d, ignore_errors=True)
        with tarfile.open(tgz) as tf:
            for rel, h in man.items():
                src = 'package/LICENSE' if rel == 'LICENSE' else f'package/es5/{rel}'
                data = tf.extractfile(src).read()
                if hashlib.sha256(data).hexdigest() != h: sys.exit(f'mathjax@{MATHJAX_VERSION}: {rel} does not match its pinned sha256')
                (d/rel).parent.mkdir(parents=True, exist_ok=True)
                (d/rel).write_bytes(data)
    print(f'installed mathjax@{MATHJAX_VERSION} into {d.relative_to(ROOT) if d.is_relative_to(ROOT) else d}')


# ---------------------------------------------------------------------------------------------
# build, sync, check
# ---------------------------------------------------------------------------------------------
def _files(d: Path) -> dict[str, Path]:
    if not d.is_dir(): return {}
    return {p.relative_to(d).as_posix(): p for p in sorted(d.rglob('*'))
            if p.is_file() and p.relative_to(d).parts[0] not in KEEP}


def build_into(out: Path, verbose=True):
    Site(ROOT, out).build(verbose=verbose)


def sync(src: Path, dst: Path) -> list[str]:
    "Make dst hold what src holds (except the KEEP entries); return the changed paths."
    a, b = _files(src), _files(dst)
    changed = []
    for rel in sorted(set(b) - set(a)):
        b[rel].unlink(); changed.append(f'removed {rel}')
    for rel, p in a.items():
        if rel not in b or b[rel].read_bytes() != p.read_bytes():
            (dst/rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dst/rel); changed.append(('updated ' if rel in b else 'added ') + rel)
    for d in sorted((p for p in dst.rglob('*') if p.is_dir()), key=lambda p: -len(p.parts)):
        if d.relative_to(dst).parts[0] not in KEEP and not any(d.iterdir()): d.rmdir()
    return changed


def diff_report(built: Path, docs: Path, limit=40) -> list[str]:
    a, b = _files(built), _files(docs)
    lines = [f'missing in docs/: {rel}' for rel in sorted(set(a) - set(b))]
    lines += [f'stale file in docs/ (no notebook makes it): {rel}' for rel in sorted(set(b) - set(a))]
    shown = 0
    for rel in sorted(set(a) & set(b)):
        x, y = a[rel].read_bytes(), b[rel].read_bytes()
        if x == y: continue
        lines.append(f'differs: docs/{rel}')
        shown += 1
        if shown > 3: continue                       # the first few diffs say enough
        try:
            d = list(difflib.unified_diff(y.decode().splitlines(), x.decode().splitlines(), f'docs/{rel} (committed)',
                                          f'{rel} (rebuilt)', n=0, lineterm=''))
            for l in d[:limit]: lines.append('    ' + (l if len(l) < 200 else l[:200] + ' ...'))
            if len(d) > limit: lines.append(f'    ... {len(d) - limit} more diff lines')
        except UnicodeDecodeError: pass
    return lines


def nbdev_yml_text() -> str:
    "`nbs/nbdev.yml` exactly as nbdev's `refresh_quarto_yml` writes it from settings.ini."
    from nbdev import quarto
    cfg = _cfg()
    vals = {k: cfg[k] for k in ['title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl']}
    return quarto._nbdev_yml.format(doc_path=cfg.doc_path.name, **vals)


def quarto_config_problems() -> list[str]:
    """nbdev's own Quarto configuration must stay valid for `nbdev_docs` (where Quarto is installed).
    nbdev regenerates `nbs/nbdev.yml` from settings.ini on every `nbdev_proc_nbs`/`nbdev_docs`, so the
    committed file must be exactly what nbdev writes (its `output-dir` is settings.ini's doc_path)."""
    import yaml
    cfg, probs = _cfg(), []
    nbs = Path(cfg.nbs_path)
    want = nbdev_yml_text()
    have = (nbs/'nbdev.yml').read_text() if (nbs/'nbdev.yml').is_file() else None
    if have != want: probs.append('nbs/nbdev.yml is not what nbdev generates from settings.ini (`python tools/build_docs.py` '
                                  'rewrites it); it should read:\n' + want)
    try:
        q = yaml.safe_load((nbs/'_quarto.yml').read_text())
        if (q.get('project') or {}).get('type') != 'website' or 'nbdev.yml' not in (q.get('metadata-files') or []):
            probs.append('nbs/_quarto.yml: needs `project: type: website` and `metadata-files: [nbdev.yml, sidebar.yml]`')
    except Exception as e: probs.append(f'nbs/_quarto.yml: cannot be read as YAML ({e})')
    return probs


def tool_versions() -> str:
    "The versions of the tools whose output lands in docs/ (pinned in settings.ini's dev_requirements)."
    from importlib.metadata import version
    return ', '.join(f'{p} {version(p)}' for p in ('nbdev', 'fastcore', 'nbconvert', 'mistune', 'pygments', 'jinja2'))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--check', action='store_true', help='rebuild into a temporary folder and fail if docs/ differs')
    ap.add_argument('--out', help='build into this folder instead of docs/ (for previews)')
    ap.add_argument('-q', '--quiet', action='store_true')
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    os.environ.setdefault('MPLBACKEND', 'Agg')
    t0 = time.time()
    docs = DOCS

    if args.check:
        with tempfile.TemporaryDirectory(prefix='ddpm_nb_docs_') as td:
            build_into(Path(td), verbose=not args.quiet)
            report = diff_report(Path(td), docs)
        report += mathjax_problems(docs) + quarto_config_problems()
        if report:
            print('\n'.join(report))
            print(f'FAILED: docs/ is not what the notebooks build ({len(report)} problems above). '
                  'Run `python tools/build_docs.py` and commit docs/ (and nbs/nbdev.yml if listed). '
                  f'If you did, compare the tool versions with the pinned dev requirements: {tool_versions()}.')
            return 1
        print(f'docs/ is up to date ({time.time() - t0:.1f} s)')
        return 0

    out = Path(args.out).resolve() if args.out else docs
    if args.out:
        build_into(out, verbose=not args.quiet)
        if mathjax_problems(out): install_mathjax(out) if not (docs/MATHJAX_DIR).is_dir() or mathjax_problems(docs) \
            else shutil.copytree(docs/MATHJAX_DIR, out/MATHJAX_DIR, dirs_exist_ok=True)
    else:
        with tempfile.TemporaryDirectory(prefix='ddpm_nb_docs_') as td:
            build_into(Path(td), verbose=not args.quiet)
            docs.mkdir(exist_ok=True)
            changed = sync(Path(td), docs)
        if mathjax_problems(docs): install_mathjax(docs)
        yml = Path(_cfg().nbs_path)/'nbdev.yml'
        if not yml.is_file() or yml.read_text() != nbdev_yml_text():
            yml.write_text(nbdev_yml_text()); changed.append('updated nbs/nbdev.yml (from settings.ini, as nbdev writes it)')
        if not args.quiet: print('\n'.join(changed) if changed else 'docs/ unchanged')
    print(f'done in {time.time() - t0:.1f} s: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
