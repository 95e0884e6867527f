/**
 * One mapping from filesystem errors to errnos: a system error answers the same NBD error
 * whether it reaches the server raw or wrapped by the file opener or the layer writer, and
 * EACCES reads as EPERM everywhere.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { access, constants, open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { NotFoundError, PermissionError, errnoOf } from '../../src/io/errors.ts';
import { FileSource, wrapFsError } from '../../src/io/file.ts';
import { wrapWriteError } from '../../src/lsmt/io-errors.ts';
import { NBD_EINVAL, NBD_EIO, NBD_ENOMEM, NBD_ENOSPC, NBD_EPERM, nbdErrorOf } from '../../src/nbd/protocol.ts';
import { tempDir } from '../helpers/temp.ts';

/** An error shaped as Node's fs raises it (for codes a test cannot provoke, e.g. EROFS). */
function systemError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: simulated`), { code });
}

const EXPECTED: Record<string, number> = {
  EACCES: NBD_EPERM,
  EPERM: NBD_EPERM,
  EROFS: NBD_EPERM,
  ENOSPC: NBD_ENOSPC,
  EDQUOT: NBD_ENOSPC,
  EFBIG: NBD_ENOSPC,
  EINVAL: NBD_EINVAL,
  ENOMEM: NBD_ENOMEM,
  ENOENT: NBD_EIO,
  EIO: NBD_EIO,
  EBADF: NBD_EIO,
};

test('a system error maps to one NBD error, raw or wrapped by the opener or the layer writer', async () => {
  for (const [code, nbd] of Object.entries(EXPECTED)) {
    const raw = systemError(code);
    const opened = wrapFsError('/x/layer', raw);
    const written = wrapWriteError('/x/layer.data', 'writing data', 4096, raw);
    assert.equal(nbdErrorOf(raw), nbd, `${code} raw`);
    assert.equal(nbdErrorOf(opened), nbd, `${code} via wrapFsError`);
    assert.equal(nbdErrorOf(written), nbd, `${code} via wrapWriteError`);
    assert.equal(errnoOf(opened), errnoOf(raw), code);
    assert.equal(errnoOf(written), errnoOf(raw), code);
  }
});

test('EACCES from the filesystem is a PermissionError that the NBD server answers EPERM', async (t) => {
  const dir = await tempDir(t, 'obd-errno-');
  const file = path.join(dir, 'plain');
  await writeFile(file, 'x', { mode: 0o644 });
  // No execute bit: access(X_OK) fails with EACCES even for root.
  const e = await access(file, constants.X_OK).then(() => undefined, (err: unknown) => err);
  assert.equal((e as NodeJS.ErrnoException).code, 'EACCES');
  const wrapped = wrapFsError(file, e);
  assert.ok(wrapped instanceof PermissionError);
  assert.match(wrapped.message, /plain: permission denied/);
  assert.equal(nbdErrorOf(wrapped), NBD_EPERM);
  assert.equal(nbdErrorOf(e), NBD_EPERM);
});

test('a missing file is a NotFoundError naming the path, answered EIO as a raw ENOENT is', async (t) => {
  const dir = await tempDir(t, 'obd-errno-');
  const missing = path.join(dir, 'missing.lsmt');
  const e = await FileSource.open(missing).then(() => undefined, (err: unknown) => err);
  assert.ok(e instanceof NotFoundError);
  assert.match(e.message, /missing\.lsmt: no such file/);
  const raw = await open(missing, 'r').then(() => undefined, (err: unknown) => err);
  assert.equal(nbdErrorOf(e), nbdErrorOf(raw));
});
