#!/usr/bin/env python3
"""Builds a staging tree from a JSON spec (test/helpers/oci-images.ts writes it), as root.

Node has no mknod, mkfifo, setxattr or nanosecond lutimes; this does all of a tree's
creation in one process so building an image costs one spawn per layer, not one per entry.

Spec: {"root": str, "entries": [entry...]}, entries in creation order (parents first).
entry: {"p": hex path, "t": file|dir|symlink|hardlink|chr|blk|fifo, "mode": int,
        "uid": int, "gid": int, "mtime": [sec, nsec],
        "data": {"gen": seed, "size": n} | {"hex": str} | {"copy": path}
              | {"size": n, "segments": [[offset, length, seed], ...]}   (a sparse file),
        "target": hex (symlink target, or the hardlink's existing path),
        "rdev": [major, minor], "xattrs": {name: hex}}
Metadata is applied after every entry exists, deepest paths first, so a directory's mtime is
not disturbed by its children being created.
"""
import hashlib
import json
import os
import shutil
import sys


def gen(seed, size):
    """Deterministic bytes: sha256(seed/counter) blocks, independent of Python's random."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{i}".encode()).digest() * 128  # 4 KiB per hash
        i += 1
    return bytes(out[:size])


def write_file(path, data):
    if "copy" in data:
        shutil.copyfile(data["copy"], path, follow_symlinks=False)
        return
    with open(path, "wb") as f:
        if "segments" in data:
            for off, length, seed in data["segments"]:
                f.seek(off)
                f.write(gen(seed, length))
            f.truncate(data["size"])
        elif "hex" in data:
            f.write(bytes.fromhex(data["hex"]))
        else:
            f.write(gen(data["gen"], data["size"]))


def main():
    spec = json.load(open(sys.argv[1]))
    root = os.fsencode(spec["root"])
    os.makedirs(root, exist_ok=True)
    made = []
    for e in spec["entries"]:
        rel = bytes.fromhex(e["p"])
        path = os.path.join(root, rel) if rel else root
        t = e["t"]
        if t == "dir":
            os.makedirs(path, exist_ok=True)
        elif t == "file":
            write_file(path, e.get("data", {"hex": ""}))
        elif t == "symlink":
            os.symlink(bytes.fromhex(e["target"]), path)
        elif t == "hardlink":
            os.link(os.path.join(root, bytes.fromhex(e["target"])), path, follow_symlinks=False)
            continue  # shares the target's inode and metadata
        elif t in ("chr", "blk", "fifo"):
            import stat
            kind = {"chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "fifo": stat.S_IFIFO}[t]
            major, minor = e.get("rdev", [0, 0])
            os.mknod(path, kind | 0o600, os.makedev(major, minor))
        else:
            raise SystemExit(f"stage-tree: unknown type {t!r}")
        made.append((path, e))
    for path, e in sorted(made, key=lambda m: -m[0].count(b"/")):
        link = e["t"] == "symlink"
        os.chown(path, e.get("uid", 0), e.get("gid", 0), follow_symlinks=False)
        if not link:
            os.chmod(path, e["mode"])  # after chown: chown clears setuid/setgid
        for name, value in sorted(e.get("xattrs", {}).items()):
            os.setxattr(path, name, bytes.fromhex(value), follow_symlinks=False)
        sec, nsec = e["mtime"]
        ns = sec * 1_000_000_000 + nsec
        os.utime(path, ns=(ns, ns), follow_symlinks=False)


main()
