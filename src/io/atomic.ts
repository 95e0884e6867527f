/**
 * Outputs that appear whole or not at all. Bytes go to `<final>.tmp-<pid>-<random>`, are
 * fsynced, and the temp is renamed over the final name; the directory is fsynced after, so
 * the new name also survives a power cut. A run killed midway leaves only its temp: the next
 * run for the same output deletes temps whose writer process is gone and leaves a live
 * writer's alone (a pid reused since only keeps a stale temp a little longer; a writer in
 * another pid namespace sharing the directory would look dead).
 */
import path from 'node:path';
import { wrapFsError } from './file.ts';
import { closeFd, fsyncFd, openFd, readdirAsync, renameAsync, rmAsync, writeFileAsync } from './fs-async.ts';
import { processAlive } from './lock.ts';

const TEMP = /^(.+)\.tmp-(\d+)-[0-9a-z]+$/;

let temps = 0;

/**
 * A fresh temporary name next to `final`, naming this process: the pid and a counter (the top
 * byte) keep a process's temps apart, 24 random bits a reused pid's. Not node:crypto, which
 * would cost a short command ~3.5 ms of start-up to load.
 */
export function tempPath(final: string): string {
  const tag = (((temps++ & 0xff) << 24) | (Math.random() * 2 ** 24)) >>> 0;
  return `${final}.tmp-${process.pid}-${tag.toString(16).padStart(8, '0')}`;
}

/**
 * Deletes the temps (files or directories) that killed writers left in `dir`: all of them, or
 * only those of the output named `base`. Best effort, never failing: a temp this user may not
 * delete (another user's, in a shared /tmp) stays. Resolves how many were removed.
 */
export async function removeStaleTemps(dir: string, base?: string): Promise<number> {
  let names: string[];
  try {
    names = await readdirAsync(dir);
  } catch {
    // Nothing to sweep here; whatever is wrong with `dir`, the write itself will report.
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    const m = TEMP.exec(name);
    if (!m || (base !== undefined && m[1] !== base) || processAlive(Number(m[2]))) continue;
    try {
      await rmAsync(path.join(dir, name), { force: true, recursive: true });
      removed++;
    } catch {
      // Not ours to remove.
    }
  }
  return removed;
}

/** fsyncs a file (or directory) by name: data written through other handles reaches the disk. */
export async function syncPath(file: string): Promise<void> {
  let fd: number | undefined;
  try {
    fd = await openFd(file, 'r');
    await fsyncFd(fd);
  } catch (e) {
    // Some file systems cannot fsync a directory; the rename is still atomic there.
    if (!['EINVAL', 'ENOTSUP', 'EISDIR'].includes((e as NodeJS.ErrnoException).code ?? '')) throw wrapFsError(file, e);
  } finally {
    if (fd !== undefined) await closeFd(fd);
  }
}

/** fsyncs the directories holding `files`, each once, so their new or renamed entries are durable. */
export async function syncDirsOf(files: readonly string[]): Promise<void> {
  for (const dir of new Set(files.map((f) => path.dirname(path.resolve(f))))) await syncPath(dir);
}

/** Makes a complete temp the final file: fsync, rename over `final`, fsync the directory. */
export async function commitTemp(tmp: string, final: string): Promise<void> {
  await syncPath(tmp);
  await renameAsync(tmp, final);
  await syncPath(path.dirname(final));
}

/**
 * Runs `write` into a temp next to `finalPath` and commits it on success; on failure the temp
 * is removed and nothing appears under the final name. Stale temps of the same output go first.
 */
export async function writeAtomic<T>(finalPath: string, write: (tmpPath: string) => Promise<T>): Promise<T> {
  await removeStaleTemps(path.dirname(finalPath), path.basename(finalPath));
  const tmp = tempPath(finalPath);
  try {
    const r = await write(tmp);
    await commitTemp(tmp, finalPath);
    return r;
  } catch (e) {
    await rmAsync(tmp, { force: true });
    throw e;
  }
}

/** Replaces `finalPath` with `data`, atomically and durably. */
export function writeFileAtomic(finalPath: string, data: Uint8Array | string): Promise<void> {
  return writeAtomic(finalPath, (tmp) => writeFileAsync(tmp, data));
}
