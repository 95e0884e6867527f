/**
 * The conversion cache (`--cache-dir DIR`): converted layers, so an image whose lower layers
 * were converted before converts only its new ones. An entry is keyed by everything the
 * committed blob depends on — the chainID (the layer and all below it), the virtual size, the
 * zfile algorithm and block size, and the engine's version — and holds the blob and its
 * description:
 *
 *   DIR/convert-v1/<key>/layer.tar     the committed blob, as pushed
 *   DIR/convert-v1/<key>/layer.json    CachedLayer
 *   DIR/convert-v1/<key>/pushed/<h>    one file per repository the blob was pushed to (cross-mounts)
 *
 * An entry is built in a temporary directory beside its final name and renamed into place
 * whole (src/io/atomic.ts naming, so a killed run's temps are swept): two converts sharing the
 * directory never see half an entry, and when both build one, the second rename finds the
 * first's (identical: conversion is deterministic) and drops its own.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { removeStaleTemps, syncPath, tempPath, writeFileAtomic } from '../io/atomic.ts';

export interface CacheKeyParts {
  chainId: string;
  vsize: number;
  algorithm: string;
  blockSize: number;
  engine: string;
}

export interface CachedLayer extends CacheKeyParts {
  diffId: string;
  uuid: string;
  parentUuid: string;
  /** The committed blob's digest and size. */
  digest: string;
  size: number;
  /** What converting it took, for reports. */
  stats: Record<string, number>;
}

export interface CacheEntry {
  key: string;
  blob: string;
  layer: CachedLayer;
}

const BLOB = 'layer.tar';
const META = 'layer.json';

export class ConvertCache {
  readonly dir: string;

  private constructor(dir: string) {
    this.dir = dir;
  }

  static async open(dir: string): Promise<ConvertCache> {
    const root = path.join(path.resolve(dir), 'convert-v1');
    await mkdir(root, { recursive: true });
    await removeStaleTemps(root);
    return new ConvertCache(root);
  }

  static key(p: CacheKeyParts): string {
    return createHash('sha256').update(JSON.stringify([p.chainId, p.vsize, p.algorithm, p.blockSize, p.engine])).digest('hex');
  }

  /**
   * The entry for `key`, its blob checked against the recorded digest (a damaged entry is
   * removed and reported as absent, so it is converted again).
   */
  async get(key: string): Promise<CacheEntry | undefined> {
    const dir = path.join(this.dir, key);
    let layer: CachedLayer;
    try {
      layer = JSON.parse(await readFile(path.join(dir, META), 'utf8')) as CachedLayer;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      await rm(dir, { recursive: true, force: true });
      return undefined;
    }
    const blob = path.join(dir, BLOB);
    const ok = await stat(blob).then((s) => s.size === layer.size, () => false) && (await fileDigest(blob)) === layer.digest;
    if (!ok) {
      await rm(dir, { recursive: true, force: true });
      return undefined;
    }
    return { key, blob, layer };
  }

  /** A fresh directory to build the entry `key` in; its blob goes to `<dir>/layer.tar`. */
  async stage(key: string): Promise<{ dir: string; blob: string }> {
    const dir = tempPath(path.join(this.dir, key));
    await mkdir(dir);
    return { dir, blob: path.join(dir, BLOB) };
  }

  /** Makes a staged entry the entry `key` (or drops it when another writer got there first). */
  async commit(key: string, staged: { dir: string }, layer: CachedLayer): Promise<CacheEntry> {
    await writeFile(path.join(staged.dir, META), JSON.stringify(layer, null, 2) + '\n');
    await syncPath(path.join(staged.dir, BLOB));
    await syncPath(path.join(staged.dir, META));
    const final = path.join(this.dir, key);
    try {
      await rename(staged.dir, final);
      await syncPath(this.dir);
    } catch (e) {
      if (!['ENOTEMPTY', 'EEXIST'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
      await rm(staged.dir, { recursive: true, force: true });
    }
    return { key, blob: path.join(final, BLOB), layer: JSON.parse(await readFile(path.join(final, META), 'utf8')) as CachedLayer };
  }

  /** Drops a staged entry that was not committed. */
  async discard(staged: { dir: string }): Promise<void> {
    await rm(staged.dir, { recursive: true, force: true });
  }

  /** Notes that entry `key`'s blob is in `repository` (`host/name`), to mount it from there later. */
  async recordPush(key: string, repository: string): Promise<void> {
    const dir = path.join(this.dir, key, 'pushed');
    await mkdir(dir, { recursive: true });
    await writeFileAtomic(path.join(dir, createHash('sha256').update(repository).digest('hex').slice(0, 32)), repository);
  }

  /** The repositories entry `key`'s blob was pushed to, sorted. */
  async pushedTo(key: string): Promise<string[]> {
    const dir = path.join(this.dir, key, 'pushed');
    const names = await readdir(dir).catch(() => [] as string[]);
    const repos = await Promise.all(names.filter((n) => /^[0-9a-f]{32}$/.test(n)).map((n) => readFile(path.join(dir, n), 'utf8').catch(() => '')));
    return repos.filter((r) => r !== '').sort();
  }
}

export async function fileDigest(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return 'sha256:' + h.digest('hex');
}
