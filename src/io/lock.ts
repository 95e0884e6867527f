/**
 * A writer lock for files that one process at a time may change: `<file>.lock` holds the
 * owner's pid. It is created exclusively; a lock whose process is gone (a crash, SIGKILL) is
 * stale and taken over. Readers check it so they never act on a file a live writer is
 * still changing (e.g. committing a writable layer that a server has open).
 */
import { fsPromises } from './builtins.ts';
import { BusyError } from './errors.ts';

/** Whether process `pid` exists (EPERM: it does, under another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid of a live process holding the lock on `file`, if any. */
export async function lockHolder(file: string): Promise<number | undefined> {
  const text = await fsPromises().readFile(`${file}.lock`, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const pid = Number.parseInt(text, 10);
  return Number.isSafeInteger(pid) && pid > 0 && processAlive(pid) ? pid : undefined;
}

/** Throws BusyError when a live process holds the writer lock on `file`. */
export async function assertUnlocked(file: string, doing: string): Promise<void> {
  const pid = await lockHolder(file);
  if (pid !== undefined) {
    throw new BusyError(`${file}: open for writing by process ${pid}${pid === process.pid ? ' (this one)' : ''}; cannot ${doing} until it closes the file`);
  }
}

export class WriterLock {
  readonly path: string;
  #held = true;
  private constructor(path: string) {
    this.path = path;
  }

  /** Takes the writer lock on `file`, replacing a stale one. */
  static async acquire(file: string): Promise<WriterLock> {
    const lockPath = `${file}.lock`;
    for (let attempt = 0; ; attempt++) {
      try {
        const fh = await fsPromises().open(lockPath, 'wx');
        try {
          await fh.writeFile(`${process.pid}\n`);
        } finally {
          await fh.close();
        }
        return new WriterLock(lockPath);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) {
          if ((e as NodeJS.ErrnoException).code === 'EEXIST') await assertUnlocked(file, 'open it for writing');
          throw e;
        }
        await assertUnlocked(file, 'open it for writing');
        await fsPromises().unlink(lockPath).catch(() => {});
      }
    }
  }

  async release(): Promise<void> {
    if (!this.#held) return;
    this.#held = false;
    await fsPromises().unlink(this.path).catch(() => {});
  }
}
