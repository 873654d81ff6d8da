"""Count the checks in the notebooks (test_* calls and asserts in cells that are not exported) and the pytest cases."""
import json, re, subprocess, sys
from pathlib import Path
pat = re.compile(r'\b(test_eq|test_ne|test_close|test_fail|test_is|test_warns|test_eq_type|test_shuffled|test_stdout)\s*\(|^\s*assert\b', re.M)
tot = 0
for nb in sorted(Path('nbs').glob('*.ipynb')):
    n = 0
    for c in json.load(open(nb))['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] != 'code' or re.match(r'\s*#\|\s*export', src): continue
        n += len(pat.findall(src))
    print(f'{nb.name:22s} {n:5d}'); tot += n
print(f'{"notebooks":22s} {tot:5d}')
out = subprocess.run([sys.executable, '-m', 'pytest', '--collect-only', '-q', 'tests/'], capture_output=True, text=True).stdout
print('pytest cases:', sum(1 for l in out.splitlines() if '::' in l))
