/**
 * The one way tests make temporary directories. Every form removes its directory (recursively,
 * ignoring a missing one) when its owner ends, whether the test passed or failed; prefixes start
 * with `obd-` so strays are easy to spot in the temp dir.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { after, before } from 'node:test';
import os from 'node:os';
import path from 'node:path';

const make = (prefix: string): Promise<string> => mkdtemp(path.join(os.tmpdir(), prefix));
const remove = (dir: string): Promise<void> => rm(dir, { recursive: true, force: true });

/** A directory removed when the test (or suite) context `t` ends. */
export async function tempDir(t: { after(fn: () => unknown): void }, prefix = 'obd-'): Promise<string> {
  const dir = await make(prefix);
  t.after(() => remove(dir));
  return dir;
}

/** Runs `fn` with a directory that is removed when `fn` settles. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>, prefix = 'obd-'): Promise<T> {
  const dir = await make(prefix);
  try {
    return await fn(dir);
  } finally {
    await remove(dir);
  }
}

/**
 * A directory for the whole of the current describe (or file, at top level): call it in the
 * describe body; `.path` is set by a `before` hook registered here, so read it in tests or in
 * later hooks, and it is removed by an `after` hook.
 */
export function suiteTempDir(prefix = 'obd-'): { path: string } {
  const dir = { path: '' };
  before(async () => {
    dir.path = await make(prefix);
  });
  after(async () => {
    if (dir.path) await remove(dir.path);
  });
  return dir;
}
