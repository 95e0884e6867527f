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

TYPES = [(stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
         (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"), (stat.S_ISFIFO, "fifo"),
         (stat.S_ISSOCK, "sock")]


def esc(b):
    return "".join(chr(c) if 0x21 <= c <= 0x7e and c not in (0x25, 0x5c) else "%%%02X" % c for c in b)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def main():
    args = sys.argv[1:]
    root = os.fsencode(args[0])
    skip_lf = "--no-lost-found" in args
    dir_mtimes = "--no-dir-mtimes" not in args
    rows = []
    stack = [b""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel) if rel else root
        st = os.lstat(path)
        kind = next(name for test, name in TYPES if test(st.st_mode))
        rows.append((rel or b".", path, st, kind))
        if kind == "dir":
            for name in os.listdir(path):
                child = os.path.join(rel, name) if rel else name
                if skip_lf and child == b"lost+found":
                    continue
                stack.append(child)
    rows.sort(key=lambda r: r[0])
    groups = {}
    for rel, _, st, kind in rows:
        if kind != "dir" and st.st_nlink > 1:
            groups.setdefault((st.st_dev, st.st_ino), rel)  # rows are sorted: first wins
    out = []
    for rel, path, st, kind in rows:
        mtime = f"{st.st_mtime_ns // 10**9}.{st.st_mtime_ns % 10**9:09d}"
        if kind == "dir" and not dir_mtimes:
            mtime = "-"
        line = [esc(rel), kind, "%04o" % stat.S_IMODE(st.st_mode), f"{st.st_uid}:{st.st_gid}", mtime]
        if kind == "file":
            line.append(f"{st.st_size}:{sha256(path)}")
        elif kind == "symlink":
            line.append("->" + esc(os.readlink(path)))
        elif kind in ("chr", "blk"):
            line.append(f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}")
        if kind != "dir" and st.st_nlink > 1:
            line.append("hl=" + esc(groups[(st.st_dev, st.st_ino)]))
        for name in sorted(os.listxattr(path, follow_symlinks=False)):
            value = os.getxattr(path, name, follow_symlinks=False)
            line.append(f"x:{name}={value.hex()}")
        out.append(" ".join(line))
    sys.stdout.write("\n".join(out) + "\n")


main()
