/**
 * Looking at a converted image with tools nobody here wrote: its layer blobs exported to a raw
 * disk by `obd export` (which checks the parent-uuid chain), e2fsck -fn on that disk, and
 * debugfs reading files and listing directories out of it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import assert from 'node:assert/strict';
import { obd } from '../../helpers/cli.ts';

interface Layout {
  manifests: { digest: string; annotations?: Record<string, string> }[];
}

/** The image manifest an OCI layout holds at `tag`. */
export async function layoutManifest(dir: string, tag = 'latest'): Promise<{ digest: string; bytes: Buffer; doc: { config: { digest: string }; layers: { digest: string; size: number; mediaType: string; annotations: Record<string, string> }[] } }> {
  const index = JSON.parse(await readFile(path.join(dir, 'index.json'), 'utf8')) as Layout;
  const d = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  assert.ok(d, `tag ${tag} in ${dir}`);
  const bytes = await readFile(path.join(dir, 'blobs', 'sha256', d.digest.slice(7)));
  return { digest: d.digest, bytes, doc: JSON.parse(bytes.toString('utf8')) };
}

export function blobFile(dir: string, digest: string): string {
  return path.join(dir, 'blobs', 'sha256', digest.slice(7));
}

/** `obd export` of the image's layers (bottom first) into `raw`; the parent chain is verified. */
export async function exportLayout(dir: string, tag: string, raw: string): Promise<void> {
  const m = await layoutManifest(dir, tag);
  const r = await obd(['export', '--verify-chain', ...m.doc.layers.map((l) => blobFile(dir, l.digest)), raw]);
  assert.equal(r.code, 0, r.stderr);
}

/** e2fsck -fn finds nothing to fix (exit 0). */
export function assertFsck(raw: string): void {
  const r = spawnSync('e2fsck', ['-fn', raw], { encoding: 'utf8' });
  assert.equal(r.status, 0, `e2fsck -fn ${raw}:\n${r.stdout}\n${r.stderr}`);
}

export function debugfs(raw: string, request: string): string {
  return execFileSync('debugfs', ['-R', request, raw], { encoding: 'latin1', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 1 << 28 });
}

/** A file's content read out of the filesystem. */
export function catFile(raw: string, p: string): Buffer {
  return Buffer.from(debugfs(raw, `cat ${p}`), 'latin1');
}

/** The names in a directory (without . and ..). */
export function listDir(raw: string, p: string): string[] {
  return debugfs(raw, `ls -p ${p}`)
    .split('\n')
    .filter((l) => l.startsWith('/'))
    .map((l) => l.split('/')[5]!)
    .filter((n) => n !== '.' && n !== '..' && n !== undefined)
    .sort();
}
