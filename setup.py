"""Packaging for ddpm_nb: every setting is read from settings.ini (nbdev 2 layout)."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
cfg = ConfigParser(delimiters=['='])
cfg.read(here / 'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

for key in ('version', 'description', 'repo', 'user', 'author', 'author_email', 'keywords',
            'copyright', 'lib_name', 'min_python', 'license', 'status', 'audience', 'language'):
    assert key in cfg, f'settings.ini is missing the key {key!r}'

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License'),
            'mit': ('MIT License', 'OSI Approved :: MIT License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable',
            '6 - Mature', '7 - Inactive']
py_versions = '3.9 3.10 3.11 3.12 3.13'.split()
lic_name, lic_classifier = licenses[cfg['license']]
min_python = cfg['min_python']


def _reqs(key):
    return cfg.get(key, '').split()


entry_points = {'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]}
scripts = cfg.get('console_scripts', '').split()
if scripts:
    entry_points['console_scripts'] = scripts

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=(here / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license=lic_name,
    author=cfg['author'],
    author_email=cfg['author_email'],
    keywords=cfg['keywords'],
    url=cfg['git_url'],
    classifiers=[
        'Development Status :: ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'].title(),
        'License :: ' + lic_classifier,
        'Natural Language :: ' + cfg['language'].title(),
    ] + [f'Programming Language :: Python :: {v}' for v in py_versions[py_versions.index(min_python):]],
    packages=setuptools.find_packages(include=[cfg['lib_path'], cfg['lib_path'] + '.*']),
    include_package_data=True,
    package_data={cfg['lib_path']: ['assets/*', 'assets/*/*']},
    install_requires=_reqs('requirements'),
    extras_require={'dev': _reqs('dev_requirements')},
    python_requires='>=' + min_python,
    zip_safe=False,
    entry_points=entry_points,
)
