/**
 * Archives made by real peers — GNU tar in every format and sparse version, Python's tarfile in
 * GNU and PAX formats — read by our reader and compared member by member, field by field, with
 * what Python's tarfile and `tar -tvv --numeric-owner` say, contents by sha256.
 */
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, link, mkdir, open, readFile, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { suiteTempDir } from '../helpers/temp.ts';
import { asGnu, listGnu, listOurs, listPython } from './helpers.ts';

const dir = suiteTempDir('obd-tar-peers-');

/** Builds the source tree: every member type, owners, modes, xattrs, long and odd names. */
async function buildTree(root: string, opts: { long: boolean; special: boolean }): Promise<void> {
  const t = path.join(root, 'tree');
  await mkdir(path.join(t, 'sub/deeper'), { recursive: true });
  await writeFile(path.join(t, 'hello'), 'hello\n');
  await writeFile(path.join(t, 'empty'), '');
  await writeFile(path.join(t, 'big'), randomBytes(1536 * 1024 + 77));
  await writeFile(path.join(t, 'sub/deeper/x'), randomBytes(5000));
  const sp = await open(path.join(t, 'sparse'), 'w');
  await sp.write(randomBytes(4096), 0, 4096, 0);
  await sp.write(randomBytes(10000), 0, 10000, 3 << 20);
  await sp.truncate(8 << 20);
  await sp.close();
  await symlink('hello', path.join(t, 'link-to-hello'));
  await symlink('../nowhere/at/all', path.join(t, 'sub/dangling'));
  await link(path.join(t, 'hello'), path.join(t, 'sub/hard'));
  await writeFile(path.join(t, 'setuid'), '#!/bin/sh\n', { mode: 0o4755 });
  execFileSync('chmod', ['4755', path.join(t, 'setuid')]);
  await writeFile(path.join(t, 'owned'), 'x');
  await chown(path.join(t, 'owned'), 1234, 5678);
  await utimes(path.join(t, 'owned'), 1_700_000_000.25, 1_600_000_000.5);
  execFileSync('setfattr', ['-n', 'user.plain', '-v', 'value', path.join(t, 'hello')]);
  execFileSync('setfattr', ['-n', 'user.bin', '-v', '0x00ff0a3d00', path.join(t, 'hello')]);
  execFileSync('setcap', ['cap_net_bind_service,cap_net_raw+ep', path.join(t, 'setuid')]);
  if (opts.special) {
    execFileSync('mkfifo', [path.join(t, 'fifo')]);
    execFileSync('mknod', [path.join(t, 'null'), 'c', '1', '3']);
    execFileSync('mknod', [path.join(t, 'loop'), 'b', '7', '200']);
  }
  if (opts.long) {
    await writeFile(path.join(t, 'n'.repeat(100)), '100');
    await writeFile(path.join(t, 'm'.repeat(101)), '101');
    await writeFile(path.join(t, 'c'.repeat(255)), '255');
    let deep = t;
    for (let i = 0; i < 20; i++) deep = path.join(deep, `${i}`.padStart(199, 'd'));
    await mkdir(deep, { recursive: true });
    await writeFile(path.join(deep, 'leaf'), 'deep');
    await symlink('t'.repeat(300), path.join(t, 'long-target'));
    await link(path.join(deep, 'leaf'), path.join(t, 'hard-to-deep'));
    await writeFile(Buffer.concat([Buffer.from(`${t}/`), Buffer.from([0x62, 0xff, 0xfe, 0x80, 0x2e])]), 'latin');
    await chown(path.join(t, 'c'.repeat(255)), 3_000_000, 4_000_000);
  }
}

function gnuTar(cwd: string, out: string, args: string[]): void {
  try {
    execFileSync('tar', ['-C', cwd, '-cf', out, '--sort=name', ...args, 'tree'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch {
    // Formats that cannot hold a member (v7 and devices) make tar exit 2 after skipping it.
  }
}

async function compare(file: string, gnu = true, min = 10): Promise<void> {
  const ours = await listOurs([await readFile(file)], file);
  assert.ok(ours.length >= min, `${file}: ${ours.length} entries`);
  same(ours, listPython(file), 'as Python tarfile reads it');
  if (gnu) same(ours.map(asGnu), listGnu(file), 'as GNU tar lists it');
}

/** Member by member, so a difference names the member rather than printing both lists. */
function same<T extends { path: string }>(ours: T[], theirs: T[], what: string): void {
  for (let i = 0; i < Math.max(ours.length, theirs.length); i++) {
    const name = Buffer.from((ours[i] ?? theirs[i])!.path, 'hex').toString().slice(0, 80);
    assert.deepEqual(ours[i], theirs[i], `${what}: member ${i} (${name})`);
  }
}

describe('archives from GNU tar and Python', () => {
  let full = '';
  let plain = '';
  before(async () => {
    full = path.join(dir.path, 'full');
    plain = path.join(dir.path, 'plain');
    await buildTree(full, { long: true, special: true });
    await buildTree(plain, { long: false, special: true });
  });

  for (const format of ['gnu', 'pax', 'ustar', 'v7']) {
    test(`GNU tar --format=${format}`, async () => {
      const out = path.join(dir.path, `${format}.tar`);
      gnuTar(format === 'gnu' || format === 'pax' ? full : plain, out, [`--format=${format}`]);
      await compare(out);
    });
  }

  test('GNU tar --format=pax --xattrs carries user.* and security.capability', async () => {
    const out = path.join(dir.path, 'xattrs.tar');
    gnuTar(full, out, ['--format=pax', '--xattrs', "--xattrs-include=*"]);
    await compare(out);
    const ours = await listOurs([await readFile(out)]);
    const hello = ours.find((l) => Buffer.from(l.path, 'hex').toString() === 'tree/hello')!;
    assert.deepEqual(hello.xattrs, { 'user.bin': '00ff0a3d00', 'user.plain': Buffer.from('value').toString('hex') });
    const setuid = ours.find((l) => Buffer.from(l.path, 'hex').toString() === 'tree/setuid')!;
    assert.ok(setuid.xattrs['security.capability'], 'the capability is read');
    assert.equal(setuid.mode, 0o4755);
  });

  for (const version of ['0.0', '0.1', '1.0']) {
    test(`GNU tar --format=pax --sparse --sparse-version=${version}`, async () => {
      const out = path.join(dir.path, `sparse-${version}.tar`);
      gnuTar(full, out, ['--format=pax', '--sparse', `--sparse-version=${version}`]);
      await compare(out);
    });
  }

  test('GNU tar --format=gnu --sparse (old GNU sparse headers, with extension blocks)', async () => {
    // Many segments so the map needs extension headers (4 in the header, 21 per extension).
    const t = path.join(dir.path, 'many', 'tree');
    await mkdir(t, { recursive: true });
    const fh = await open(path.join(t, 'holes'), 'w');
    for (let i = 0; i < 60; i++) await fh.write(randomBytes(3000), 0, 3000, i * 65536);
    await fh.truncate(64 << 20);
    await fh.close();
    const out = path.join(dir.path, 'oldgnu-sparse.tar');
    gnuTar(path.dirname(t), out, ['--format=gnu', '--sparse']);
    const bytes = await readFile(out);
    const at = bytes.indexOf('tree/holes\0');
    assert.ok(at >= 0 && at % 512 === 0);
    assert.equal(String.fromCharCode(bytes[at + 156]!), 'S', 'tar wrote an old GNU sparse member');
    assert.equal(bytes[at + 482], 1, 'its map continues in extension blocks');
    await compare(out, true, 2);
    gnuTar(full, out, ['--format=gnu', '--sparse']);
    await compare(out);
  });

  for (const format of ['GNU_FORMAT', 'PAX_FORMAT']) {
    test(`Python tarfile ${format}`, async () => {
      const out = path.join(dir.path, `py-${format}.tar`);
      execFileSync('python3', ['-c', `
import tarfile, sys
with tarfile.open(sys.argv[1], 'w', format=tarfile.${format}) as tf:
    tf.add(sys.argv[2], arcname='tree')
`, out, path.join(full, 'tree')]);
      await compare(out);
    });
  }
});
