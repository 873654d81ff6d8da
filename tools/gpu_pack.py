#!/usr/bin/env python
"""Pack a run folder into a few files small enough to bring back from a remote machine, and unpack them again.

    python tools/gpu_pack.py pack runs/gpu OUT             # OUT gets MANIFEST.json, results.json, bundle.tar.00, .01, ...
    python tools/gpu_pack.py unpack OUT runs/gpu_back      # checks every part's SHA-256, joins them, extracts

Some remote machines hand back only a few files of limited size (the GPU machine this book's GPU edition was
prepared for returns at most 8 files of at most 16 MiB each). `pack` puts a run folder into one tar, leaving out
what is large and can be made again (by default the sample cache `samples/` and the training state
`train_state.pt`), splits the tar into parts of `--part_mib` MiB, and writes `MANIFEST.json` (the size and SHA-256
of every part and of the whole tar) last, beside a copy of `results.json` for a quick look. It checks the file
count against `--max_files` before writing anything. `unpack` refuses a destination that already holds files,
checks the manifest, joins the parts and extracts only regular files that stay inside the destination.
"""
import argparse, hashlib, io, json, sys, tarfile
from pathlib import Path

MANIFEST = 'MANIFEST.json'
PART = 'bundle.tar.{:02d}'
EXCLUDE = ('samples', 'train_state.pt')


def _sha(b: bytes) -> str: return hashlib.sha256(b).hexdigest()


def pack(src, dst, part_mib: float = 15.0, max_files: int = 8, exclude=EXCLUDE) -> dict:
    "Pack folder `src` into `dst` (at most `max_files` files of at most `part_mib` MiB); returns the manifest."
    src, dst = Path(src), Path(dst)
    if not src.is_dir(): raise SystemExit(f"pack: {src} is not a folder.")
    files = sorted(p for p in src.rglob('*') if p.is_file() and p.relative_to(src).parts[0] not in exclude)
    if not files: raise SystemExit(f"pack: nothing to pack in {src} (excluded: {', '.join(exclude)}).")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        for p in files: tar.add(p, arcname=p.relative_to(src).as_posix(), recursive=False)
    whole = buf.getvalue()
    size = int(part_mib * 2**20)
    chunks = [whole[i:i + size] for i in range(0, len(whole), size)]
    extra = [MANIFEST] + (['results.json'] if (src / 'results.json').is_file() else [])
    if len(chunks) + len(extra) > max_files:
        raise SystemExit(f"pack: {len(whole) / 2**20:.1f} MiB needs {len(chunks)} parts of {part_mib:g} MiB plus {len(extra)} "
                         f"files, over --max_files {max_files}; exclude more (--exclude) or allow more files.")
    dst.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, c in enumerate(chunks):
        (dst / PART.format(i)).write_bytes(c)
        parts.append(dict(name=PART.format(i), bytes=len(c), sha256=_sha(c)))
    if 'results.json' in extra: (dst / 'results.json').write_bytes((src / 'results.json').read_bytes())
    man = dict(format='ddpm_nb-pack-1', source=src.name, bytes=len(whole), sha256=_sha(whole), parts=parts,
               files=[p.relative_to(src).as_posix() for p in files], excluded=list(exclude))
    (dst / MANIFEST).write_text(json.dumps(man, indent=1))      # last: a folder without it is an unfinished pack
    return man


def unpack(src, dst) -> dict:
    "Check and join the parts in `src` (a folder written by `pack`) and extract them into `dst`; returns the manifest."
    src, dst = Path(src), Path(dst)
    if not (src / MANIFEST).is_file(): raise SystemExit(f"unpack: {src / MANIFEST} not found: is {src} a folder written by pack?")
    man = json.loads((src / MANIFEST).read_text())
    if man.get('format') != 'ddpm_nb-pack-1': raise SystemExit(f"unpack: {src / MANIFEST} is not a ddpm_nb pack manifest.")
    if dst.exists() and any(dst.iterdir()): raise SystemExit(f"unpack: {dst} already holds files; give an empty or new folder.")
    chunks = []
    for p in man['parts']:
        f = src / p['name']
        if not f.is_file(): raise SystemExit(f"unpack: part {p['name']} is missing from {src}.")
        b = f.read_bytes()
        if len(b) != p['bytes'] or _sha(b) != p['sha256']:
            raise SystemExit(f"unpack: part {p['name']} is damaged ({len(b)} bytes, expected {p['bytes']}; SHA-256 differs).")
        chunks.append(b)
    whole = b''.join(chunks)
    if _sha(whole) != man['sha256']: raise SystemExit("unpack: the joined parts do not match the manifest's SHA-256.")
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        members = tar.getmembers()
        root = dst.resolve()
        for m in members:
            target = (dst / m.name).resolve()
            if not m.isfile() or (root not in target.parents):
                raise SystemExit(f"unpack: refusing {m.name!r} (not a regular file inside the destination).")
        dst.mkdir(parents=True, exist_ok=True)
        for m in members:
            target = dst / m.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(m).read())
    return man


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    a = sub.add_parser('pack', help='folder -> manifest + parts')
    a.add_argument('src'); a.add_argument('dst')
    a.add_argument('--part_mib', type=float, default=15.0, help='size of each part in MiB (default 15)')
    a.add_argument('--max_files', type=int, default=8, help='refuse to write more files than this (default 8)')
    a.add_argument('--exclude', nargs='*', default=list(EXCLUDE), help='top-level names to leave out')
    u = sub.add_parser('unpack', help='manifest + parts -> folder')
    u.add_argument('src'); u.add_argument('dst')
    args = p.parse_args(argv)
    if args.cmd == 'pack':
        m = pack(args.src, args.dst, args.part_mib, args.max_files, tuple(args.exclude))
        print(f"packed {len(m['files'])} files ({m['bytes'] / 2**20:.1f} MiB) of {args.src} into {len(m['parts'])} parts in {args.dst}")
    else:
        m = unpack(args.src, args.dst)
        print(f"unpacked {len(m['files'])} files ({m['bytes'] / 2**20:.1f} MiB) into {args.dst}; SHA-256 checked")
    return 0


if __name__ == '__main__':
    sys.exit(main())
