#!/usr/bin/env python3
"""Prints a listing of a tree, one line per path, for comparing two filesystems.

usage: fs-listing.py ROOT [--no-lost-found] [--no-dir-mtimes]

Node has no xattr API, so test/helpers/fs-listing.ts runs this. A line is
  PATH TYPE MODE UID:GID MTIME [DETAIL] [HARDLINK] [XATTRS]
PATH is relative to ROOT ("." for ROOT itself) with every byte outside printable ASCII, and
"\\", "%" and space, written %XX, so non-UTF-8 names survive; paths are sorted by their raw
bytes. DETAIL is size + sha256 for files, the target for symlinks, major,minor for devices.
HARDLINK is "hl=FIRST" naming the byte-wise first path of the file's hardlink group (files
with links > 1 only). XATTRS is "x:NAME=HEX" per attribute, sorted by name; ACLs and
security.capability are attributes like any other here.
"""
import hashlib
import os
import stat
import sys
from concurrent.futures import ThreadPoolExecutor

TYPES = [(stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
         (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"), (stat.S_ISFIFO, "fifo"),
         (stat.S_ISSOCK, "sock")]


def esc(b):
    return "".join(chr(c) if 0x21 <= c <= 0x7e and c not in (0x25, 0x5c) else "%%%02X" % c for c in b)


def sha256(path, size):
    h = hashlib.sha256()
    if size == 0:  # no open/read: through FUSE each costs a round trip, and most files of a big directory are empty
        return h.hexdigest()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def describe(root, rel):
    """Everything the line says about one path (the slow part through FUSE: run in threads)."""
    path = os.path.join(root, rel) if rel else root
    st = os.lstat(path)
    kind = next(name for test, name in TYPES if test(st.st_mode))
    detail = None
    if kind == "file":
        detail = f"{st.st_size}:{sha256(path, st.st_size)}"
    elif kind == "symlink":
        detail = "->" + esc(os.readlink(path))
    elif kind in ("chr", "blk"):
        detail = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
    xattrs = [f"x:{n}={os.getxattr(path, n, follow_symlinks=False).hex()}" for n in sorted(os.listxattr(path, follow_symlinks=False))]
    return rel or b".", st, kind, detail, xattrs


def main():
    args = sys.argv[1:]
    root = os.fsencode(args[0])
    skip_lf = "--no-lost-found" in args
    dir_mtimes = "--no-dir-mtimes" not in args
    rels = [b""]
    stack = [b""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for e in it:
                child = os.path.join(rel, e.name) if rel else e.name
                if skip_lf and child == b"lost+found":
                    continue
                rels.append(child)
                if e.is_dir(follow_symlinks=False):
                    stack.append(child)
    # Through fuse2fs every call is a round trip; threads overlap some (crafted image: 4.0 s -> 3.4 s).
    with ThreadPoolExecutor(8) as pool:
        rows = sorted(pool.map(lambda r: describe(root, r), rels, chunksize=32), key=lambda r: r[0])
    groups = {}
    for rel, st, kind, _, _ in rows:
        if kind != "dir" and st.st_nlink > 1:
            groups.setdefault((st.st_dev, st.st_ino), rel)  # rows are sorted: first wins
    out = []
    for rel, st, kind, detail, xattrs in rows:
        mtime = f"{st.st_mtime_ns // 10**9}.{st.st_mtime_ns % 10**9:09d}"
        if kind == "dir" and not dir_mtimes:
            mtime = "-"
        line = [esc(rel), kind, "%04o" % stat.S_IMODE(st.st_mode), f"{st.st_uid}:{st.st_gid}", mtime]
        if detail is not None:
            line.append(detail)
        if kind != "dir" and st.st_nlink > 1:
            line.append("hl=" + esc(groups[(st.st_dev, st.st_ino)]))
        out.append(" ".join(line + xattrs))
    sys.stdout.write("\n".join(out) + "\n")


main()
