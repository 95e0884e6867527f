/**
 * Image descriptions as the product opens them: config.v1.json (openImage on the config),
 * OCI manifests and indexes (parse + platform choice), and OCI layouts (openImage on
 * `oci:DIR:tag` with a mutated index.json, oci-layout marker or manifest). JSON has no
 * checksums; a mutated manifest is stored under its new digest so the parser behind the
 * digest check is reached.
 */
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { openImage } from '../../image/open.ts';
import { MemorySource } from '../../io/memory.ts';
import { isIndex, MediaType, parseIndex, parseManifest, selectPlatform, sha256Digest, sniffMediaType } from '../../remote/manifest.ts';
import { OciLayout } from '../../remote/oci-layout.ts';
import { readDevice } from '../readback.ts';
import { layerBytes, MiB, sampleExtents, zfileBytes } from '../seeds.ts';
import type { Outcome, Seed, Target, TargetContext } from '../target.ts';

const BASE = { uuid: 'b0b0b0b0-0000-4000-8000-000000000001', virtualSize: 4 * MiB };
const TOP = { uuid: 'b0b0b0b0-0000-4000-8000-000000000002', parentUuid: BASE.uuid, virtualSize: 4 * MiB };

async function twoLayers(ctx: TargetContext): Promise<[Uint8Array, Uint8Array]> {
  const base = await layerBytes(BASE, sampleExtents('img-base'));
  const top = await zfileBytes(ctx.tmp, await layerBytes(TOP, sampleExtents('img-top').slice(1, 3)), { algorithm: 'lz4' });
  return [base, top];
}

/** Copies every file of `from` (copies, not links: a case may write over any file it names). */
async function cloneDir(from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true });
  for (const e of await readdir(from, { withFileTypes: true })) {
    if (e.isDirectory()) await cloneDir(path.join(from, e.name), path.join(to, e.name));
    else await copyFile(path.join(from, e.name), path.join(to, e.name));
  }
}

async function inCaseDir<T>(ctx: TargetContext, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(ctx.tmp, 'case-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function readImage(spec: string, cap: number): Promise<Outcome> {
  const dev = await openImage([spec]);
  try {
    return await readDevice(dev, cap);
  } finally {
    await dev.close();
  }
}

/**
 * Keeps a mutated config inside the case directory and off the network: paths lose a
 * leading '/' and their '..', and repoBlobUrl is dropped (no test registry here).
 */
function confine(input: Uint8Array): Uint8Array {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(input).toString('utf8'));
  } catch {
    return input;
  }
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return v.replace(/^[/\\]+/, '').replace(/\.\./g, '__');
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'repoBlobUrl').map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return Buffer.from(JSON.stringify(walk(doc)));
}

const json = (doc: unknown) => Buffer.from(JSON.stringify(doc, null, 2));

export const configTarget: Target = {
  name: 'config',
  async seeds(ctx) {
    const [base, top] = await twoLayers(ctx);
    const blobs = path.join(ctx.tmp, 'config-blobs');
    await mkdir(path.join(blobs, 'top'), { recursive: true });
    await writeFile(path.join(blobs, 'base.lsmt'), base);
    await writeFile(path.join(blobs, 'top', 'overlaybd.commit'), top);
    const meta = { blobs };
    const digest = sha256Digest(top);
    return [
      { name: 'files+upper', bytes: json({ lowers: [{ file: 'base.lsmt' }, { file: 'top/overlaybd.commit' }], upper: { data: 'up.data', index: 'up.index' }, resultFile: 'result' }), fields: [], guarded: false, json: true, meta },
      { name: 'dir+digest', bytes: json({ lowers: [{ file: 'base.lsmt', size: base.length }, { dir: 'top', digest, size: top.length }], recordTracePath: 'rec.trace', download: { enable: false } }), fields: [], guarded: false, json: true, meta },
    ];
  },
  run: (seed, input, ctx) =>
    inCaseDir(ctx, async (dir) => {
      await cloneDir(seed.meta!.blobs as string, dir);
      const file = path.join(dir, 'config.v1.json');
      await writeFile(file, confine(input));
      return readImage(file, ctx.readCap);
    }),
};

const desc = (mediaType: string, bytes: Uint8Array, extra: object = {}) => ({ mediaType, digest: sha256Digest(bytes), size: bytes.length, ...extra });

function manifestDocs(layers: Uint8Array[]) {
  const config = json({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } });
  const manifest = json({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: desc(MediaType.ociConfig, config),
    layers: layers.map((l) => desc(MediaType.ociLayer, l, { annotations: { 'containerd.io/snapshot/overlaybd/blob-digest': sha256Digest(l) } })),
  });
  const other = json({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: desc(MediaType.ociConfig, config), layers: [] });
  const index = json({
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [desc(MediaType.ociManifest, other, { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }), desc(MediaType.ociManifest, manifest, { platform: { os: 'linux', architecture: 'amd64' } })],
  });
  return { config, manifest, other, index };
}

export const manifestTarget: Target = {
  name: 'manifest',
  async seeds(ctx) {
    const d = manifestDocs(await twoLayers(ctx));
    const list = json({ ...JSON.parse(d.index.toString()), mediaType: MediaType.dockerList });
    return [
      { name: 'oci-manifest', bytes: d.manifest, fields: [], guarded: false, json: true },
      { name: 'oci-index', bytes: d.index, fields: [], guarded: false, json: true },
      { name: 'docker-list', bytes: list, fields: [], guarded: false, json: true },
    ];
  },
  async run(seed, input) {
    const m = { bytes: input, digest: sha256Digest(input), mediaType: sniffMediaType(input, MediaType.ociManifest) };
    const platform = { os: 'linux', architecture: 'amd64' };
    const out = isIndex(m) ? selectPlatform(parseIndex(m, seed.name), platform, seed.name) : parseManifest(m, seed.name);
    return { output: Buffer.from(JSON.stringify(out)) };
  },
};

/** Which file of the layout a seed mutates. */
type LayoutPart = 'index.json' | 'oci-layout' | 'image-index' | 'manifest';

export const ociLayoutTarget: Target = {
  name: 'oci-layout',
  async seeds(ctx) {
    const layers = await twoLayers(ctx);
    const d = manifestDocs(layers);
    const dir = path.join(ctx.tmp, 'layout');
    await rm(dir, { recursive: true, force: true });
    const layout = await OciLayout.open(dir, { create: true });
    for (const b of [d.config, ...layers]) await layout.putBlob(sha256Digest(b), new MemorySource(b));
    await layout.putManifest(d.manifest, MediaType.ociManifest);
    await layout.putManifest(d.other, MediaType.ociManifest);
    await layout.putManifest(d.index, MediaType.ociIndex, 'v1');
    const indexJson = await readFile(path.join(dir, 'index.json'));
    const marker = await readFile(path.join(dir, 'oci-layout'));
    const seed = (part: LayoutPart, bytes: Uint8Array): Seed => ({ name: part, bytes, fields: [], guarded: false, json: true, meta: { dir, part, index: d.index, manifest: d.manifest } });
    return [seed('index.json', indexJson), seed('oci-layout', marker), seed('image-index', d.index), seed('manifest', d.manifest)];
  },
  run: (seed, input, ctx) =>
    inCaseDir(ctx, async (dir) => {
      const m = seed.meta as { dir: string; part: LayoutPart; index: Uint8Array; manifest: Uint8Array };
      await cloneDir(m.dir, dir);
      const blob = (b: Uint8Array) => path.join(dir, 'blobs', 'sha256', sha256Digest(b).slice(7));
      let index = m.index;
      if (m.part === 'index.json' || m.part === 'oci-layout') {
        await rm(path.join(dir, m.part));
        await writeFile(path.join(dir, m.part), input);
      } else {
        // A changed blob is stored under its own digest and the document above it points there.
        if (m.part === 'manifest') {
          const doc = JSON.parse(Buffer.from(index).toString());
          Object.assign(doc.manifests[1], { digest: sha256Digest(input), size: input.length });
          index = json(doc);
          await writeFile(blob(index), index);
        }
        await writeFile(blob(input), input);
        const top = m.part === 'image-index' ? input : index;
        await rm(path.join(dir, 'index.json'));
        await writeFile(path.join(dir, 'index.json'), json({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [{ ...desc(MediaType.ociIndex, top), annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] }));
      }
      return readImage(`oci:${dir}:v1`, ctx.readCap);
    }),
};
