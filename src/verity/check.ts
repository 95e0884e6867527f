/**
 * `obd verify` (docs/format.md §7.5): every check an image's bytes allow, collected into a
 * report instead of stopping at the first failure — each layer's digest, its verity tree
 * (rebuilt and compared byte for byte, root included), the zfile header, jump table and
 * block CRCs, the LSMT header, trailer and index rules (opening checks them, §2.3), and the
 * parent-uuid chain (§2.9). Registry layers are downloaded once into a temporary directory.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FileSource } from '../io/file.ts';
import type { ByteSource } from '../io/types.ts';
import { readAt } from '../io/util.ts';
import { verifyChain } from '../lsmt/stack.ts';
import { locateImage, openLayerSource, type OpenedLayer } from '../image/open.ts';
import { ZFileChecksumError, ZFileFormatError } from '../zfile/errors.ts';
import { openImageConfig } from '../image/config.ts';
import { downloadBlob } from '../remote/download.ts';
import { openRepository, resolveImage, type RemoteOptions } from '../remote/image.ts';
import type { Descriptor } from '../remote/manifest.ts';
import { referenceTarget, resolveReference } from '../remote/reference.ts';
import { layerVerity, type LayerVerity } from './annotations.ts';
import { digestAndTree } from './publish.ts';

export type CheckName = 'digest' | 'tree' | 'zfile' | 'lsmt' | 'chain';

export interface CheckResult {
  check: CheckName;
  ok: boolean;
  detail: string;
}

export interface LayerReport {
  name: string;
  digest: string | undefined;
  size: number;
  wrapping: string[];
  checks: CheckResult[];
  ok: boolean;
}

export interface ImageReport {
  image: string;
  ok: boolean;
  layers: LayerReport[];
  chain: CheckResult | undefined;
  /** Bytes read and checked. */
  bytes: number;
}

export interface CheckOptions extends RemoteOptions {
  onProgress?: (done: number, total: number) => void;
}

interface Item {
  name: string;
  digest: string | undefined;
  size: number;
  verity: LayerVerity | undefined;
  /** The tree blob's bytes, for layers with a tree. */
  tree?: () => Promise<Uint8Array>;
  /** The blob as a local source (downloaded first for a registry). */
  open(): Promise<ByteSource>;
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** The whole of a (small) blob, a short one failing typed; the source is closed after. */
async function readAll(src: ByteSource): Promise<Uint8Array> {
  try {
    return await readAt(src, 0, src.size);
  } finally {
    await src.close();
  }
}

/** Checks the image `spec` names: layer files, a config.v1.json, `oci:DIR[:tag]` or a registry reference. */
export async function checkImage(specs: readonly string[], opts: CheckOptions = {}): Promise<ImageReport> {
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'obd-verify-'));
  const cleanup: Array<() => Promise<void>> = [() => rm(tmp, { recursive: true, force: true })];
  try {
    const items = await itemsOf(specs, opts, tmp, cleanup);
    const total = items.reduce((a, i) => a + i.size, 0);
    const report: ImageReport = { image: specs.join(' '), ok: true, layers: [], chain: undefined, bytes: 0 };
    const opened: OpenedLayer[] = [];
    for (const item of items) {
      const layer = await checkLayer(item, (n) => opts.onProgress?.(report.bytes + n, total));
      report.bytes += item.size;
      report.layers.push(layer.report);
      if (layer.opened) opened.push(layer.opened);
    }
    if (opened.length === items.length && opened.length > 1) {
      try {
        verifyChain(opened);
        report.chain = { check: 'chain', ok: true, detail: `${opened.length} layers, each parent uuid is the uuid below` };
      } catch (e) {
        report.chain = { check: 'chain', ok: false, detail: message(e) };
      }
    }
    for (const l of opened) await l.source.close().catch(() => {});
    report.ok = report.layers.every((l) => l.ok) && report.chain?.ok !== false;
    return report;
  } finally {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  }
}

async function itemsOf(specs: readonly string[], opts: CheckOptions, tmp: string, cleanup: Array<() => Promise<void>>): Promise<Item[]> {
  const kind = (await locateImage(specs)).kind;
  const only = specs[0]!;
  if (kind === 'config') {
    const cfg = await openImageConfig(only, opts);
    cleanup.push(() => cfg.close());
    return cfg.layers.map((src, i) => {
      const lower = cfg.config.lowers[i];
      return { name: src.name, digest: lower?.digest, size: src.size, verity: undefined, open: async () => src };
    });
  }
  if (kind === 'reference') {
    const r = await resolveReference(only);
    const repo = await openRepository(r, opts);
    cleanup.push(() => repo.close());
    const img = await resolveImage(repo.repo, referenceTarget(r), opts.platform);
    return img.manifest.layers.map((d: Descriptor) => {
      const verity = layerVerity(d, repo.repo.name);
      return {
        name: `${repo.repo.name}@${d.digest}`,
        digest: d.digest,
        size: d.size,
        verity,
        tree: verity ? async () => readAll(await repo.repo.openBlob(verity.tree, verity.treeSize)) : undefined,
        async open() {
          if (repo.repo.kind !== 'registry') return repo.repo.openBlob(d.digest, d.size);
          const file = path.join(tmp, d.digest.slice(7));
          await downloadBlob(repo.repo, d.digest, d.size, file);
          return FileSource.open(file);
        },
      };
    });
  }
  const items: Item[] = [];
  for (const file of specs) {
    const f = await FileSource.open(file);
    const size = f.size;
    await f.close();
    items.push({ name: file, digest: undefined, size, verity: undefined, open: () => FileSource.open(file) });
  }
  return items;
}

async function checkLayer(item: Item, onProgress: (done: number) => void): Promise<{ report: LayerReport; opened: OpenedLayer | undefined }> {
  const report: LayerReport = { name: item.name, digest: item.digest, size: item.size, wrapping: [], checks: [], ok: true };
  const add = (check: CheckName, ok: boolean, detail: string) => report.checks.push({ check, ok, detail });
  let src: ByteSource;
  try {
    src = await item.open();
  } catch (e) {
    add('digest', false, message(e));
    report.ok = false;
    return { report, opened: undefined };
  }
  // One pass for the digest and the tree.
  try {
    const { digest: actual, tree } = await digestAndTree(src, item.verity?.chunk, onProgress);
    if (item.digest) add('digest', actual === item.digest, actual === item.digest ? actual : `expected ${item.digest}, got ${actual}`);
    else add('digest', true, `${actual} (nothing to compare with)`);
    if (tree && item.verity && item.tree) {
      const stored = await item.tree();
      const rootOk = Buffer.from(tree.root).equals(Buffer.from(item.verity.root));
      const same = Buffer.from(tree.bytes).equals(Buffer.from(stored));
      add('tree', rootOk && same, rootOk && same ? `${Math.max(1, Math.ceil(src.size / tree.chunk))} chunks of ${tree.chunk} bytes, root matches` : !rootOk ? 'the blob does not hash to the root in the manifest' : 'the tree blob differs from the tree of the blob');
    }
  } catch (e) {
    add(report.checks.length ? 'tree' : 'digest', false, message(e));
  }
  let opened: OpenedLayer | undefined;
  try {
    opened = await openLayerSource(src);
    report.wrapping = opened.wrapping;
    // The decoded bytes check themselves when their wrapper stores checksums (today only zfile does).
    const own = await opened.source.checkIntegrity?.();
    if (own) add('zfile', own.ok, own.detail);
    add('lsmt', true, `header, trailer and ${opened.indexEntriesOnDisk} index entries sound`);
  } catch (e) {
    add(opened || e instanceof ZFileFormatError || e instanceof ZFileChecksumError ? 'zfile' : 'lsmt', false, message(e));
    await src.close().catch(() => {});
    opened = undefined;
  }
  report.ok = report.checks.every((c) => c.ok);
  return { report, opened };
}
