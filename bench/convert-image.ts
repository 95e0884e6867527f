/**
 * The conversion benchmark's input: a ≥ 500 MiB, 12-layer OCI image (OCI layout, gzip layers
 * as registries serve them), made deterministically from real system trees of this machine
 * plus seeded synthetic content, and cached on disk under a key of everything it depends on
 * (the recipe version, the chosen host files' paths, sizes and mtimes, the zlib version).
 *
 * Layers, bottom first: a base sampled from /etc and /usr (real file-size distribution,
 * symlinks, hardlinks), package-like trees (python, headers, docs), large files
 * (incompressible, compressible text, half-zero blocks, low-entropy), a directory of thousands
 * of entries, a small-file-heavy node_modules-like tree, an update that overwrites files and
 * changes modes, a clean-up with whiteouts, a whole-directory whiteout, an opaque directory and
 * type replacements, and two small app layers on top. Tag `full` is that image; tag `rebuild`
 * shares its first 10 layers and has two other top layers (a new app version), for
 * reconversion with a cache.
 *
 *   node bench/convert-image.ts [--scale F] [--out DIR]   (prints the layout's directory)
 */
import { createCipheriv, createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { lstat, mkdir, open, readdir, readlink, rename, rm, stat, writeFile, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { createGzip } from 'node:zlib';
import { Rng } from './util.ts';
import { tarStream, type OutEntry } from './tar-write.ts';

const RECIPE = 'convert-image v1';
const MiB = 1 << 20;

/** Where an entry's bytes come from: a host file (maybe patched) or seeded synthetic data. */
type DataSpec =
  | { k: 'host'; src: string; size: number }
  | { k: 'patched'; src: string; size: number; seed: string }
  | { k: 'random' | 'text' | 'holey' | 'low'; seed: string; size: number };

export interface PlanEntry extends Omit<OutEntry, 'data'> {
  spec?: DataSpec;
}
interface LayerPlan {
  name: string;
  entries: PlanEntry[];
}
export interface LayerMeta {
  name: string;
  digest: string;
  diffId: string;
  size: number;
  tarSize: number;
  /** Bytes of regular-file content (hardlinks not counted again). */
  contentBytes: number;
  entries: number;
  files: number;
  whiteouts: number;
}
export interface ImageMeta {
  key: string;
  dir: string;
  images: Record<'full' | 'rebuild', LayerMeta[]>;
}

// ---------------------------------------------------------------- synthetic data

function seedBytes(seed: string): Buffer {
  return createHash('sha256').update(seed).digest();
}

/** AES-CTR keystream: incompressible bytes, fast and the same on every machine. */
function keystream(seed: string): (n: number) => Buffer {
  const k = seedBytes(seed);
  const c = createCipheriv('aes-128-ctr', k.subarray(0, 16), k.subarray(16, 32));
  return (n) => c.update(Buffer.alloc(n));
}

const WORDS = 'the of and to in is for on that by with from at as service request error warning info debug user session cache disk layer image block write read commit index node worker queue retry timeout connection started stopped finished'.split(' ');

function textOf(rng: Rng, n: number): Buffer {
  let s = '';
  while (s.length < n) {
    s += `2024-0${1 + rng.int(9)}-1${rng.int(10)}T${10 + rng.int(14)}:${10 + rng.int(50)}:${10 + rng.int(50)}Z host-${rng.int(8)} svc[${1000 + rng.int(9000)}]:`;
    for (let w = 4 + rng.int(12); w > 0; w--) s += ` ${WORDS[rng.int(WORDS.length)]}`;
    s += ` id=${rng.int(1e9).toString(16)}\n`;
  }
  return Buffer.from(s.slice(0, n), 'latin1');
}

async function* chunks(spec: DataSpec): AsyncGenerator<Uint8Array> {
  const CH = MiB;
  if (spec.k === 'host' || spec.k === 'patched') {
    const fh = await open(spec.src, 'r');
    const ks = spec.k === 'patched' ? keystream(spec.seed) : undefined;
    try {
      for (let at = 0; at < spec.size; at += CH) {
        const n = Math.min(CH, spec.size - at);
        const buf = Buffer.alloc(n); // a file shorter than when planned reads as zeros past its end
        await fh.read(buf, 0, n, at);
        // A patched build: 64 bytes changed in every 64 KiB (a rebuilt binary, same size).
        if (ks) for (let p = 0; p < n; p += 65536) ks(64).copy(buf, p, 0, Math.min(64, n - p));
        yield buf;
      }
    } finally {
      await fh.close();
    }
    return;
  }
  const ks = keystream(spec.seed);
  const rng = new Rng(seedBytes(spec.seed).readUInt32LE(0));
  for (let at = 0; at < spec.size; at += CH) {
    const n = Math.min(CH, spec.size - at);
    if (spec.k === 'random') yield ks(n);
    else if (spec.k === 'text') yield textOf(rng, n);
    else if (spec.k === 'low') {
      const b = ks(n);
      for (let i = 0; i < n; i++) b[i] = b[i]! & 0x0f;
      yield b;
    } else {
      // Half the 4 KiB blocks zero (a database or VM file with holes written out).
      const b = ks(n);
      for (let p = 0; p < n; p += 4096) if (rng.next() < 0.5) b.fill(0, p, Math.min(n, p + 4096));
      yield b;
    }
  }
}

// ---------------------------------------------------------------- host trees

interface HostNode {
  path: string; // absolute
  type: 'file' | 'dir' | 'symlink';
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  ino: string;
  nlink: number;
  link?: string;
}

async function hostNode(p: string): Promise<HostNode | undefined> {
  const st = await lstat(p).catch(() => undefined);
  if (!st) return undefined;
  const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : undefined;
  if (!type) return undefined;
  return {
    path: p,
    type,
    size: type === 'file' ? st.size : 0,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    mtime: Math.floor(st.mtimeMs / 1000),
    ino: `${st.dev}:${st.ino}`,
    nlink: st.nlink,
    link: type === 'symlink' ? await readlink(p) : undefined,
  };
}

/** Every node under `root` (sorted walk), skipping `exclude` prefixes and undecodable names. */
async function walk(root: string, exclude: (p: string) => boolean): Promise<HostNode[]> {
  const out: HostNode[] = [];
  const visit = async (p: string) => {
    if (exclude(p) || p.includes('\ufffd')) return;
    const n = await hostNode(p);
    if (!n) return;
    out.push(n);
    if (n.type !== 'dir') return;
    const names = (await readdir(p).catch(() => [] as string[])).sort();
    for (const name of names) await visit(path.join(p, name));
  };
  await visit(root);
  return out;
}

const hash32 = (s: string) => createHash('sha1').update(s).digest().readUInt32BE(0);

/**
 * A deterministic sample of files up to `budget` bytes (files in hash order, each taken if it
 * fits, none over 48 MiB), all their hardlink siblings, a third of the symlinks, and the
 * directories above them.
 */
function sample(nodes: HostNode[], budget: number, salt: string): HostNode[] {
  const files = nodes.filter((n) => n.type === 'file' && n.size <= 48 * MiB).sort((a, b) => hash32(salt + a.path) - hash32(salt + b.path) || (a.path < b.path ? -1 : 1));
  const byIno = new Map<string, HostNode[]>();
  for (const f of files) if (f.nlink > 1) byIno.set(f.ino, [...(byIno.get(f.ino) ?? []), f]);
  const chosen = new Set<HostNode>();
  let total = 0;
  for (const f of files) {
    if (chosen.has(f) || total + f.size > budget) continue;
    for (const g of f.nlink > 1 ? byIno.get(f.ino)! : [f]) chosen.add(g);
    total += f.size;
  }
  for (const n of nodes) if (n.type === 'symlink' && hash32(salt + n.path) % 3 === 0) chosen.add(n);
  const byPath = new Map(nodes.map((n) => [n.path, n]));
  for (const n of [...chosen]) {
    for (let d = path.dirname(n.path); d !== '/'; d = path.dirname(d)) {
      const dn = byPath.get(d);
      if (dn) chosen.add(dn);
    }
  }
  return [...chosen];
}

/** Plan entries for host nodes placed at `to(path)`; the second path of an inode is a hardlink. */
async function hostEntries(nodes: HostNode[], to: (p: string) => string = (p) => p.slice(1)): Promise<PlanEntry[]> {
  const first = new Map<string, string>();
  const out: PlanEntry[] = [];
  // The ancestors above the sampled roots (/usr, /usr/lib, ...) as the host has them.
  const dirs = new Set<string>();
  for (const n of nodes) for (let d = path.dirname(n.path); d !== '/'; d = path.dirname(d)) dirs.add(d);
  const have = new Set(nodes.map((n) => n.path));
  const all = [...nodes];
  for (const d of dirs) if (!have.has(d)) all.push((await hostNode(d))!);
  for (const n of all.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    const base = { path: to(n.path), mode: n.mode, uid: n.uid, gid: n.gid, mtime: n.mtime };
    if (n.type === 'dir') out.push({ ...base, type: 'dir' });
    else if (n.type === 'symlink') out.push({ ...base, type: 'symlink', linkname: n.link });
    else if (n.nlink > 1 && first.has(n.ino)) out.push({ ...base, type: 'hardlink', linkname: first.get(n.ino) });
    else {
      if (n.nlink > 1) first.set(n.ino, base.path);
      out.push({ ...base, type: 'file', size: n.size, spec: { k: 'host', src: n.path, size: n.size } });
    }
  }
  return out;
}

// ---------------------------------------------------------------- the recipe

const T0 = 1_700_000_000;
const dir = (p: string, mode = 0o755): PlanEntry => ({ path: p, type: 'dir', mode, uid: 0, gid: 0, mtime: T0 });
const file = (p: string, spec: DataSpec, mode = 0o644, extra: Partial<PlanEntry> = {}): PlanEntry => ({ path: p, type: 'file', mode, uid: 0, gid: 0, mtime: T0, size: spec.size, spec, ...extra });
const whiteout = (p: string): PlanEntry => ({ path: path.posix.join(path.posix.dirname(p), `.wh.${path.posix.basename(p)}`), type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T0, size: 0 });
/** A directory entry for every ancestor of the given paths, so a layer names its parents. */
function parents(paths: string[]): PlanEntry[] {
  const s = new Set<string>();
  for (const p of paths) for (let d = path.posix.dirname(p); d !== '.'; d = path.posix.dirname(d)) s.add(d);
  return [...s].sort().map((d) => dir(d));
}
const sorted = (es: PlanEntry[]) => es.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
const withParents = (es: PlanEntry[]) => {
  const have = new Set(es.map((e) => e.path));
  return sorted([...parents(es.map((e) => e.path)).filter((d) => !have.has(d.path)), ...es]);
};
const sizeOf = (rng: Rng, lo: number, hi: number) => Math.floor(lo * Math.pow(hi / lo, rng.next()));

async function plan(scale: number): Promise<Record<'full' | 'rebuild', LayerPlan[]>> {
  const S = (n: number) => Math.max(1, Math.round(n * scale));
  const usr = (p: string) => p.startsWith('/usr/lib/python3') || p.startsWith('/usr/share/doc') || p.startsWith('/usr/share/man') || p.startsWith('/usr/share/locale');
  const baseNodes = (await Promise.all(['/etc', '/usr/bin', '/usr/sbin', '/usr/lib', '/usr/libexec', '/usr/share'].map((r) => walk(r, usr)))).flat();
  const base = sample(baseNodes, S(240 * MiB), 'base');
  const skeleton = [dir('tmp', 0o1777), dir('var'), dir('var/lib'), dir('var/cache'), dir('root', 0o700), dir('home'), dir('opt'), dir('srv')];
  const merged = ['bin', 'sbin', 'lib', 'lib64'].map((l): PlanEntry => ({ path: l, type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: T0, linkname: l === 'lib64' ? 'usr/lib64' : `usr/${l}` }));
  const L0 = sorted([...(await hostEntries(base)), ...skeleton, ...merged]);

  const pyNodes = (await Promise.all(['/usr/lib/python3', '/usr/lib/python3.11'].map((r) => walk(r, () => false)))).flat();
  const L1 = await hostEntries(sample(pyNodes, S(100 * MiB), 'py'));
  const L2 = await hostEntries(sample(await walk('/usr/include', () => false), S(60 * MiB), 'inc'));
  const L3 = withParents([
    file('opt/data/blob.bin', { k: 'random', seed: 'blob', size: S(48 * MiB) }),
    file('opt/data/app.log', { k: 'text', seed: 'log', size: S(48 * MiB) }),
    file('opt/data/db.img', { k: 'holey', seed: 'db', size: S(32 * MiB) }, 0o600),
    file('opt/data/weights.bin', { k: 'low', seed: 'weights', size: S(24 * MiB) }),
  ]);
  const rng4 = new Rng(4);
  const info = Array.from({ length: S(6000) }, (_, i) => file(`var/lib/pkgdb/info/pkg${String(i).padStart(5, '0')}-${WORDS[i % WORDS.length]}.list`, { k: 'text', seed: `info${i}`, size: sizeOf(rng4, 200, 4000) }));
  const empty = Array.from({ length: S(3000) }, (_, i) => file(`var/cache/stamps/s${(i * 2654435761) >>> 0}`, { k: 'text', seed: '', size: 0 }));
  const L4 = withParents([...info, ...empty]);
  const rng5 = new Rng(5);
  const mods: PlanEntry[] = [];
  for (let p = 0; p < S(800); p++) {
    const pkg = `app/node_modules/${WORDS[p % WORDS.length]}-${p}`;
    mods.push(file(`${pkg}/package.json`, { k: 'text', seed: `pj${p}`, size: sizeOf(rng5, 300, 2000) }));
    for (let f = 0, n = 8 + rng5.int(40); f < n; f++) mods.push(file(`${pkg}/lib/m${f}.js`, { k: 'text', seed: `js${p}.${f}`, size: sizeOf(rng5, 60, 6000) }));
  }
  const L5 = withParents(mods);
  const docNodes = (await Promise.all(['/usr/share/doc', '/usr/share/man'].map((r) => walk(r, () => false)))).flat();
  const L6 = await hostEntries(sample(docNodes, S(40 * MiB), 'doc'));

  // An update: 4 % of the base's files rebuilt (same size, patched), python files rewritten,
  // some directories' modes changed, package lists rewritten.
  const baseFiles = L0.filter((e) => e.type === 'file' && e.spec?.k === 'host');
  const patched = baseFiles.filter((e) => hash32(`upd${e.path}`) % 25 === 0).map((e) => ({ ...e, mtime: T0, spec: { k: 'patched', src: (e.spec as { src: string }).src, size: e.size!, seed: `p${e.path}` } as DataSpec }));
  const pyFiles = L1.filter((e) => e.type === 'file');
  const rewritten = pyFiles.filter((e) => hash32(`rw${e.path}`) % 20 === 0).map((e) => file(e.path, { k: 'text', seed: `rw${e.path}`, size: e.size! + 100 }));
  const chmods = L0.filter((e) => e.type === 'dir' && hash32(`cm${e.path}`) % 50 === 0).map((e) => ({ ...e, mode: 0o750 }));
  const relists = info.filter((_, i) => i % 20 === 0).map((e) => file(e.path, { k: 'text', seed: `re${e.path}`, size: e.size! * 2 }));
  const L7 = withParents([...patched, ...rewritten, ...chmods, ...relists]);

  // A clean-up: whiteouts of python files and half the package lists, a whole include
  // directory whited out, an opaque docs directory refilled, a file replaced by a directory
  // and a directory by a file, a symlink retargeted.
  const incDirs = L2.filter((e) => e.type === 'dir' && e.path.split('/').length === 3);
  const goneDir = incDirs[0];
  const asFile = incDirs[1];
  const docDirs = L6.filter((e) => e.type === 'dir' && e.path.split('/').length === 4);
  const opaque = docDirs[0];
  const etcFile = L0.find((e) => e.type === 'file' && e.path.startsWith('etc/') && e.path.split('/').length === 2);
  const link = L0.find((e) => e.type === 'symlink' && e.path.startsWith('usr/'));
  const cleanup: PlanEntry[] = [
    ...pyFiles.filter((e) => hash32(`wh${e.path}`) % 10 === 0).map((e) => whiteout(e.path)),
    ...info.filter((_, i) => i % 2 === 1).map((e) => whiteout(e.path)),
    ...(goneDir ? [whiteout(goneDir.path)] : []),
    ...(asFile ? [file(asFile.path, { k: 'text', seed: 'asfile', size: 5000 })] : []),
    ...(opaque ? [dir(opaque.path), file(`${opaque.path}/.wh..wh..opq`, { k: 'text', seed: '', size: 0 }), file(`${opaque.path}/README`, { k: 'text', seed: 'opq', size: 3000 })] : []),
    ...(etcFile ? [dir(etcFile.path), file(`${etcFile.path}/replaced`, { k: 'text', seed: 'etc', size: 100 })] : []),
    ...(link ? [{ ...link, linkname: '/opt/data/app.log' }] : []),
  ];
  const L8 = withParents(cleanup);

  const libNodes = (await walk('/usr/lib/x86_64-linux-gnu', () => false)).filter((n) => n.type === 'file' && n.path.split('/').length === 5);
  const libs = sample(libNodes, S(25 * MiB), 'app').filter((n) => n.type === 'file');
  const cap = Buffer.from('0000000200200000000000000000000000000000', 'hex'); // VFS_CAP_REVISION_2, cap_net_bind_service
  const L9 = withParents([
    ...(await hostEntries(libs, (p) => `app/lib/${path.basename(p)}`)).filter((e) => e.type !== 'dir'),
    file('app/bin/server', { k: 'random', seed: 'server1', size: S(6 * MiB) }, 0o755, { xattrs: { 'security.capability': cap, 'user.build': Buffer.from('1') } }),
    { path: 'app/bin/server-current', type: 'hardlink', mode: 0o755, uid: 0, gid: 0, mtime: T0, linkname: 'app/bin/server' },
    { path: 'app/run/ctl', type: 'fifo', mode: 0o600, uid: 0, gid: 0, mtime: T0 },
    file('app/VERSION-old', { k: 'text', seed: 'v0', size: 20 }),
  ]);
  const app = (v: number): [LayerPlan, LayerPlan] => [
    {
      name: `app-v${v}`,
      entries: withParents([
        file('app/bin/server', { k: 'random', seed: `server${v + 1}`, size: S(4 * MiB) }, 0o755),
        ...Array.from({ length: 50 }, (_, i) => file(`app/config/c${i}.json`, { k: 'text', seed: `cfg${v}.${i}`, size: 2000 + i * 10 })),
        file('etc/hostname', { k: 'text', seed: `host${v}`, size: 12 }),
        ...Array.from({ length: 100 }, (_, i) => file(`var/lib/pkgdb/info/new${v}-${i}.list`, { k: 'text', seed: `n${v}.${i}`, size: 700 })),
      ]),
    },
    { name: `top-v${v}`, entries: withParents([whiteout('app/VERSION-old'), file('app/VERSION', { k: 'text', seed: `v${v}`, size: 20 }), file('etc/motd', { k: 'text', seed: `motd${v}`, size: 300 })]) },
  ];
  const lower: LayerPlan[] = [
    { name: 'base', entries: L0 },
    { name: 'python', entries: L1 },
    { name: 'headers', entries: L2 },
    { name: 'data', entries: L3 },
    { name: 'many-entries', entries: L4 },
    { name: 'node-modules', entries: L5 },
    { name: 'docs', entries: L6 },
    { name: 'update', entries: L7 },
    { name: 'cleanup', entries: L8 },
    { name: 'app', entries: L9 },
  ];
  return { full: [...lower, ...app(1)], rebuild: [...lower, ...app(2)] };
}

// ---------------------------------------------------------------- writing the layout

/** Counts and hashes bytes going through. */
function meter(): Transform & { bytes: number; digest(): string } {
  const h = createHash('sha256');
  const t = new Transform({
    transform(chunk, _enc, cb) {
      h.update(chunk);
      t.bytes += chunk.length;
      cb(null, chunk);
    },
  }) as Transform & { bytes: number; digest(): string };
  t.bytes = 0;
  t.digest = () => `sha256:${h.digest('hex')}`;
  return t;
}

async function putBlob(dir: string, bytes: Uint8Array): Promise<string> {
  const hex = createHash('sha256').update(bytes).digest('hex');
  await writeFile(path.join(dir, 'blobs', 'sha256', hex), bytes);
  return `sha256:${hex}`;
}

async function writeLayer(dir: string, layer: LayerPlan): Promise<LayerMeta> {
  const entries = layer.entries.map((e): OutEntry => ({ ...e, data: e.spec && e.size ? () => chunks(e.spec!) : undefined }));
  const raw = meter();
  const gz = meter();
  const tmp = path.join(dir, 'blobs', 'sha256', `.tmp-${layer.name}`);
  await pipeline(Readable.from(tarStream(entries)), raw, createGzip({ level: 6 }), gz, createWriteStream(tmp));
  const digest = gz.digest();
  await rename(tmp, path.join(dir, 'blobs', 'sha256', digest.slice(7)));
  const files = layer.entries.filter((e) => e.type === 'file' && !path.posix.basename(e.path).startsWith('.wh.'));
  return {
    name: layer.name,
    digest,
    diffId: raw.digest(),
    size: gz.bytes,
    tarSize: raw.bytes,
    contentBytes: files.reduce((s, e) => s + (e.size ?? 0), 0),
    entries: layer.entries.length,
    files: files.length,
    whiteouts: layer.entries.filter((e) => path.posix.basename(e.path).startsWith('.wh.')).length,
  };
}

async function writeImage(dir: string, layers: LayerMeta[], tag: string): Promise<Record<string, unknown>> {
  const config = {
    created: '2024-01-01T00:00:00Z',
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/app/bin/server'], WorkingDir: '/app' },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((l) => ({ created: '2024-01-01T00:00:00Z', created_by: `bench/convert-image.ts: ${l.name}` })),
  };
  const cfg = Buffer.from(JSON.stringify(config));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await putBlob(dir, cfg), size: cfg.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size })),
    }),
  );
  return { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: await putBlob(dir, manifest), size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': tag } };
}

const HERE = path.dirname(fileURLToPath(import.meta.url));

/**
 * Builds the image (or finds it cached) and returns where it is and what each layer holds.
 * `root` defaults to $OBD_BENCH_CACHE or /var/tmp/obd-bench; `scale` shrinks every size and
 * count (tests use a small one).
 */
export async function ensureImage(opts: { scale?: number; root?: string; log?: (s: string) => void } = {}): Promise<ImageMeta> {
  const scale = opts.scale ?? 1;
  const log = opts.log ?? (() => {});
  const plans = await plan(scale);
  const key = createHash('sha256')
    .update(JSON.stringify({ RECIPE, scale, zlib: process.versions.zlib, tar: await readFile(path.join(HERE, 'tar-write.ts'), 'utf8'), plans }))
    .digest('hex')
    .slice(0, 16);
  const dir = path.join(opts.root ?? process.env.OBD_BENCH_CACHE ?? path.join(os.tmpdir() === '/tmp' ? '/var/tmp' : os.tmpdir(), 'obd-bench'), `convert-image-${key}`);
  const metaFile = path.join(dir, 'bench-meta.json');
  const cached = await readFile(metaFile, 'utf8').catch(() => undefined);
  if (cached) return JSON.parse(cached) as ImageMeta;
  log(`building the benchmark image in ${dir} (cached afterwards)`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  const done = new Map<LayerPlan, LayerMeta>();
  const images = {} as ImageMeta['images'];
  for (const tag of ['full', 'rebuild'] as const) {
    const metas: LayerMeta[] = [];
    for (const l of plans[tag]) {
      // The two images share their lower layers' plans (the same objects): each tar is made once.
      if (!done.has(l)) {
        const t0 = performance.now();
        done.set(l, await writeLayer(dir, l));
        const m = done.get(l)!;
        log(`  ${tag} ${l.name}: tar ${(m.tarSize / MiB).toFixed(1)} MiB, gzip ${(m.size / MiB).toFixed(1)} MiB, ${m.entries} entries (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
      }
      metas.push(done.get(l)!);
    }
    images[tag] = metas;
  }
  const manifests = [await writeImage(dir, images.full, 'full'), await writeImage(dir, images.rebuild, 'rebuild')];
  await writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }));
  const meta: ImageMeta = { key, dir, images };
  await writeFile(metaFile, JSON.stringify(meta, null, 1));
  return meta;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const a = process.argv.slice(2);
  const at = (f: string) => (a.includes(f) ? a[a.indexOf(f) + 1] : undefined);
  const meta = await ensureImage({ scale: Number(at('--scale') ?? 1), root: at('--out'), log: (s) => process.stderr.write(`${s}\n`) });
  const st = await stat(meta.dir);
  process.stdout.write(`${meta.dir}${st.isDirectory() ? '' : ' (missing!)'}\n`);
}
