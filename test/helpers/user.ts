/**
 * An unprivileged user for tests that show a command needs no root (`obd mount` through
 * fuse2fs, `obd convert`). Made on first use (needs root); commands run through runuser with
 * a minimal environment.
 */
import { execFileSync } from 'node:child_process';
import { MAIN } from './cli.ts';
import { run, type RunResult } from '../nbd/helpers/run.ts';

export const TEST_USER = 'obdtest';

export function ensureTestUser(): void {
  try {
    execFileSync('id', ['-u', TEST_USER], { stdio: 'ignore' });
  } catch {
    execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', TEST_USER], { stdio: 'ignore' });
  }
}

/** Runs a command as the test user in `cwd` (also its HOME). */
export function asTestUser(cmd: string[], cwd: string, opts: { timeoutMs?: number } = {}): Promise<RunResult> {
  return run('runuser', ['-u', TEST_USER, '--', 'env', '-i', 'PATH=/usr/bin:/bin', `HOME=${cwd}`, 'sh', '-c', `cd "$0" && exec "$@"`, cwd, ...cmd], opts);
}

/** Runs `obd ARGS` as the test user. */
export const obdAsTestUser = (args: string[], cwd: string, opts?: { timeoutMs?: number }) => asTestUser([process.execPath, MAIN, ...args], cwd, opts);
