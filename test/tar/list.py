"""Lists a tar archive as Python's tarfile reads it, one JSON object per member (the oracle
test/tar/*.test.ts compare the reader with). Names and link targets as hex of their raw bytes."""
import hashlib, json, sys, tarfile

TYPES = {tarfile.REGTYPE: 'file', tarfile.AREGTYPE: 'file', tarfile.CONTTYPE: 'file',
         tarfile.GNUTYPE_SPARSE: 'file', tarfile.LNKTYPE: 'hardlink', tarfile.SYMTYPE: 'symlink',
         tarfile.CHRTYPE: 'chr', tarfile.BLKTYPE: 'blk', tarfile.DIRTYPE: 'dir', tarfile.FIFOTYPE: 'fifo'}

def raw(s):
    return s.encode('utf-8', 'surrogateescape')

def norm(b):
    return b'/'.join(c for c in b.split(b'/') if c not in (b'', b'.'))

out = []
with tarfile.open(sys.argv[1], 'r:') as tf:
    for m in tf:
        t = TYPES[m.type]
        if t == 'file' and m.name.endswith('/'):
            t = 'dir'
        content = tf.extractfile(m).read() if t == 'file' else b''
        xattrs = {}
        for k, v in m.pax_headers.items():
            if k.startswith('SCHILY.xattr.'):
                xattrs[k[len('SCHILY.xattr.'):]] = raw(v).hex()
        out.append({
            'path': norm(raw(m.name)).hex(), 'type': t, 'mode': m.mode & 0o7777, 'uid': m.uid, 'gid': m.gid,
            'mtime': m.pax_headers.get('mtime', str(int(m.mtime))), 'size': m.size if t == 'file' else 0,
            'linkname': (norm(raw(m.linkname)) if t == 'hardlink' else raw(m.linkname)).hex(),
            'devmajor': m.devmajor if t in ('chr', 'blk') else 0, 'devminor': m.devminor if t in ('chr', 'blk') else 0,
            'xattrs': xattrs, 'sha256': hashlib.sha256(content).hexdigest(),
        })
print(json.dumps(out))
