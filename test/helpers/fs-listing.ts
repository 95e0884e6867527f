/**
 * Listings of directory trees for comparing filesystems: one line per path with its type,
 * mode, owner, mtime (ns), content digest / link target / device numbers, hardlink group
 * and every xattr (ACLs and security.capability included). test/helpers/fs-listing.py makes
 * them (node has no xattr API); the line format is described there.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fs-listing.py');

export interface ListingOptions {
  /** Leave out `lost+found` at the root (an ext4 has one; a tar-unpacked tree does not). */
  noLostFound?: boolean;
  /** Leave out directories' mtimes. */
  noDirMtimes?: boolean;
}

/** The listing of the tree at `root`, lines sorted by the raw bytes of their paths. */
export function listTree(root: string, opts: ListingOptions = {}): Promise<string[]> {
  const args = [SCRIPT, root, ...(opts.noLostFound ? ['--no-lost-found'] : []), ...(opts.noDirMtimes ? ['--no-dir-mtimes'] : [])];
  return new Promise((resolve, reject) => {
    execFile('python3', args, { maxBuffer: 512 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`fs-listing ${root}: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout).split('\n').filter((l) => l !== ''));
    });
  });
}

const pathOf = (line: string) => line.slice(0, line.indexOf(' '));

export interface ListingDiff {
  onlyA: string[];
  onlyB: string[];
  /** Paths in both whose lines differ: [line in A, line in B]. */
  changed: [string, string][];
}

/** What differs between two listings, by path. */
export function diffListings(a: string[], b: string[]): ListingDiff {
  const bm = new Map(b.map((l) => [pathOf(l), l]));
  const am = new Map(a.map((l) => [pathOf(l), l]));
  const d: ListingDiff = { onlyA: [], onlyB: [], changed: [] };
  for (const [p, l] of am) {
    const o = bm.get(p);
    if (o === undefined) d.onlyA.push(l);
    else if (o !== l) d.changed.push([l, o]);
  }
  for (const [p, l] of bm) if (!am.has(p)) d.onlyB.push(l);
  return d;
}

/** The paths a diff names (sorted), to assert exactly which entries differ. */
export function diffPaths(d: ListingDiff): string[] {
  return [...d.onlyA.map(pathOf), ...d.onlyB.map(pathOf), ...d.changed.map(([l]) => pathOf(l))].sort();
}

const clip = (l: string) => (l.length > 300 ? `${l.slice(0, 300)}…` : l);

/** A readable report of a diff (at most `max` lines per kind), or '' when the listings agree. */
export function formatDiff(d: ListingDiff, names: [string, string] = ['A', 'B'], max = 20): string {
  const out: string[] = [];
  const section = (title: string, items: string[][]) => {
    if (!items.length) return;
    out.push(`${title} (${items.length}):`, ...items.slice(0, max).flatMap((lines) => lines.map((l) => `  ${clip(l)}`)));
    if (items.length > max) out.push(`  … ${items.length - max} more`);
  };
  section(`only in ${names[0]}`, d.onlyA.map((l) => [l]));
  section(`only in ${names[1]}`, d.onlyB.map((l) => [l]));
  section(
    'different',
    d.changed.map(([x, y]) => [`${names[0]}: ${x}`, `${names[1]}: ${y}`]),
  );
  return out.join('\n');
}
