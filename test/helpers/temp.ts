/**
 * The one way tests make temporary directories. `tempDir`, `withTempDir` and `suiteTempDir`
 * remove their directory (recursively) when its owner ends, whether the test passed or failed;
 * `makeTempDir`/`removeTempDir` are for helpers that tie a directory to something they return.
 * Prefixes start with `obd-` so strays are easy to spot in the temp dir.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { after, before } from 'node:test';
import os from 'node:os';
import path from 'node:path';

/**
 * A directory the caller removes with `removeTempDir`: only for helpers whose directory lives
 * as long as something they return (a server's `stop()`, a workspace's `done()`); tests use
 * the forms below.
 */
export function makeTempDir(prefix = 'obd-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Removes a directory and everything in it; a missing one is not an error. */
export function removeTempDir(dir: string): Promise<void> {
  return rm(dir, { recursive: true, force: true });
}

/** A directory removed when the test (or suite) context `t` ends. */
export async function tempDir(t: { after(fn: () => unknown): void }, prefix = 'obd-'): Promise<string> {
  const dir = await makeTempDir(prefix);
  t.after(() => removeTempDir(dir));
  return dir;
}

/** Runs `fn` with a directory that is removed when `fn` settles. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>, prefix = 'obd-'): Promise<T> {
  const dir = await makeTempDir(prefix);
  try {
    return await fn(dir);
  } finally {
    await removeTempDir(dir);
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
    dir.path = await makeTempDir(prefix);
  });
  after(async () => {
    if (dir.path) await removeTempDir(dir.path);
  });
  return dir;
}
