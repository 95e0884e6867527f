/**
 * The independent unpacker the layer applier is compared with: layers written as tars by
 * python3's tarfile (not project code), put in an OCI layout and unpacked by umoci as root.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ApplyEntry } from '../../src/convert/apply.ts';

const run = promisify(execFile);

/** Debian's python3 (starts in a third of the time a pyenv shim takes), else the one on PATH. */
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

const WRITE_TARS = String.raw`
import io, json, sys, tarfile
types = {'file': tarfile.REGTYPE, 'dir': tarfile.DIRTYPE, 'symlink': tarfile.SYMTYPE, 'hardlink': tarfile.LNKTYPE,
         'chr': tarfile.CHRTYPE, 'blk': tarfile.BLKTYPE, 'fifo': tarfile.FIFOTYPE}
dec = lambda h: bytes.fromhex(h).decode('utf-8', 'surrogateescape')
for layer in json.load(sys.stdin):
    with tarfile.open(layer['out'], 'w', format=tarfile.PAX_FORMAT, encoding='utf-8', errors='surrogateescape') as t:
        for e in layer['entries']:
            i = tarfile.TarInfo(dec(e['path']) or '.')
            i.type = types[e['type']]
            i.mode, i.uid, i.gid, i.mtime = e['mode'], e['uid'], e['gid'], e['mtime']
            i.linkname = dec(e['linkname'])
            i.devmajor, i.devminor = e['devmajor'], e['devminor']
            i.pax_headers = {'SCHILY.xattr.' + k: v for k, v in e['xattrs'].items()}
            data = bytes.fromhex(e['data'])
            i.size = len(data)
            t.addfile(i, io.BytesIO(data) if data else None)
`;

async function contentOf(e: ApplyEntry): Promise<Buffer> {
  if (e.type !== 'file') return Buffer.alloc(0);
  const out = Buffer.alloc(e.size);
  for await (const p of e.data()) out.set(p.bytes, p.offset);
  return out;
}

/** Writes each layer as a PAX tar with python3's tarfile; returns the tar files. Dense files only. */
export async function writeTars(dir: string, layers: ApplyEntry[][]): Promise<string[]> {
  const spec = [];
  const outs: string[] = [];
  for (let i = 0; i < layers.length; i++) {
    const out = path.join(dir, `layer-${i + 1}.tar`);
    outs.push(out);
    const entries = [];
    for (const e of layers[i]!) {
      entries.push({
        path: Buffer.from(e.path).toString('hex'), type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime.sec,
        linkname: Buffer.from(e.linkname).toString('hex'), devmajor: e.devmajor, devminor: e.devminor,
        xattrs: Object.fromEntries([...e.xattrs].map(([k, v]) => [k, Buffer.from(v).toString('latin1')])),
        data: (await contentOf(e)).toString('hex'),
      });
    }
    spec.push({ out, entries });
  }
  const child = run(PYTHON, ['-c', WRITE_TARS]);
  child.child.stdin!.end(JSON.stringify(spec));
  await child;
  return outs;
}

async function blob(layout: string, bytes: Buffer | string): Promise<{ digest: string; size: number }> {
  const hex = createHash('sha256').update(bytes).digest('hex');
  await writeFile(path.join(layout, 'blobs', 'sha256', hex), bytes);
  return { digest: `sha256:${hex}`, size: Buffer.byteLength(bytes) };
}

/** An OCI layout at `layout` (tag "t") of the given uncompressed layer tar files. */
export async function writeLayout(layout: string, tarFiles: string[]): Promise<void> {
  const tars = await Promise.all(tarFiles.map((f) => readFile(f)));
  await mkdir(path.join(layout, 'blobs', 'sha256'), { recursive: true });
  await writeFile(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const layers = [];
  for (const t of tars) layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...(await blob(layout, t)) });
  const config = await blob(layout, JSON.stringify({
    architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
  }));
  const manifest = await blob(layout, JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers,
  }));
  await writeFile(path.join(layout, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 't' } }],
  }));
}

/**
 * umoci unpack of the layout's tag "t" into `bundle`; returns the rootfs, or the error when
 * umoci refuses a layer (test/convert/helpers.ts' umociUnpack is for images that must unpack).
 */
export async function tryUmociUnpack(layout: string, bundle: string): Promise<{ rootfs: string } | { error: string }> {
  try {
    await run('umoci', ['unpack', '--image', `${layout}:t`, bundle]);
    return { rootfs: path.join(bundle, 'rootfs') };
  } catch (e) {
    return { error: String((e as { stderr?: string }).stderr ?? e) };
  }
}
