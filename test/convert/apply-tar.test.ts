/**
 * Real layers end to end: GNU tar archives of staging trees made as root (every entry type,
 * a sparse file, xattrs with security.capability, long and non-UTF-8 names, hardlinks,
 * whiteouts and an opaque directory with children before and after its marker, a file
 * replaced by a directory and the reverse) read by src/tar's readTar and applied by
 * applyLayer onto the model. The first layer alone must give the staging tree itself (mtimes
 * to the nanosecond); both must give the tree umoci unpacks from the same archives (but for
 * directory mtimes: umoci leaves a directory's at the unpack's time where a whiteout removed
 * something inside).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { applyLayer } from '../../src/convert/apply.ts';
import { readTar } from '../../src/tar/reader.ts';
import { TreeModel } from '../../src/convert/tree-model.ts';
import { listTree } from '../helpers/fs-listing.ts';
import { tryUmociUnpack, writeLayout } from '../helpers/umoci-oracle.ts';
import { assertSameListing } from './helpers.ts';
import { tempDir } from '../helpers/temp.ts';

const run = promisify(execFile);

const ROOT = process.getuid?.() === 0;
const skip = ROOT ? false : 'needs root (mknod, chown, security.capability)';

/** Layer 1: a base tree; layer 2: changes over it, whiteouts written as the files they are. */
const STAGE = String.raw`
set -euo pipefail
cd "$1"
mkdir -p l1 l2
cd l1
mkdir -p etc usr/lib/deep/er opq/sub gone/inner f2d
printf 'root:x:0:0::/root:/bin/sh\n' > etc/passwd
head -c 1048577 /dev/urandom > usr/lib/big.bin
: > usr/lib/empty
printf x > usr/lib/one
ln usr/lib/one usr/lib/one-link
ln -s ../lib/one usr/lib/rel-link
ln -s /nonexistent/target usr/lib/dangling
ln -s "$(head -c 300 /dev/zero | tr '\0' 'L')" usr/lib/long-symlink
truncate -s 20M usr/lib/sparse
printf 'middle' | dd of=usr/lib/sparse bs=1 seek=10485760 conv=notrunc status=none
printf 'end' | dd of=usr/lib/sparse bs=1 seek=20971517 conv=notrunc status=none
mknod dev-null c 1 3
mknod dev-sda b 8 0
mkfifo fifo
printf s > usr/lib/setuid && chmod 4755 usr/lib/setuid
chmod 1777 usr/lib/deep
printf cap > usr/lib/ping && setcap cap_net_raw+ep usr/lib/ping
printf x > usr/lib/xattrs && setfattr -n user.mime -v text/plain usr/lib/xattrs && setfattr -n trusted.t -v 0x00ff01 usr/lib/xattrs
printf o > usr/lib/owned && chown 70000:1234 usr/lib/owned
long="$(printf 'n%.0s' $(seq 1 200))"
mkdir -p "usr/share/$long" && printf l > "usr/share/$long/$(printf 'm%.0s' $(seq 1 150))"
printf u > $'usr/share/caf\xe9'
printf 1 > opq/lower && printf 2 > opq/sub/lower
printf 3 > gone/inner/file && printf 4 > file2dir && printf 5 > f2d/child
touch -h -d '2001-02-03 04:05:06.123456789' usr/lib/one usr/lib/rel-link
printf old > usr/lib/old && touch -d '1960-01-01 00:00:00.5' usr/lib/old
cd ../l2
mkdir -p opq usr/lib etc file2dir
printf new-before > opq/before
printf sorts-before-the-marker > opq/+early
: > opq/.wh..wh..opq
printf new-after > opq/zafter
: > .wh.gone
: > usr/lib/.wh.big.bin
: > usr/lib/.wh.absent
printf now-a-dir > file2dir/inside
printf now-a-file > f2d
printf v2 > etc/passwd
ln etc/passwd etc/passwd-link
`;

async function* fileStream(file: string): AsyncIterable<Uint8Array> {
  yield* createReadStream(file, { highWaterMark: 65536 + 7 });
}

test('GNU tar layers through readTar and applyLayer give the tree umoci unpacks', { skip, timeout: 60_000 }, async (t) => {
  const dir = await tempDir(t, 'obd-apply-tar-');
  await run('bash', ['-c', STAGE, 'stage', dir], { env: { ...process.env, TZ: 'UTC' } });
  const tars: string[] = [];
  for (const l of ['l1', 'l2']) {
    const out = path.join(dir, `${l}.tar`);
    await run('tar', ['--format=pax', '--xattrs', '--xattrs-include=*', '--sparse', '--numeric-owner', '--sort=name', '-C', path.join(dir, l), '-cf', out, '.']);
    tars.push(out);
  }
  const model = new TreeModel();
  const opts = { noLostFound: true };
  await applyLayer(model, readTar(fileStream(tars[0]!), { name: tars[0] }), { name: 'layer-1' });
  assertSameListing(model.listing(opts).split('\n'), await listTree(path.join(dir, 'l1'), opts), ['layer 1 applied', 'its staging tree']);
  await applyLayer(model, readTar(fileStream(tars[1]!), { name: tars[1] }), { name: 'layer-2' });

  await writeLayout(path.join(dir, 'layout'), tars);
  const theirs = await tryUmociUnpack(path.join(dir, 'layout'), path.join(dir, 'bundle'));
  assert.ok('rootfs' in theirs, 'error' in theirs ? theirs.error : '');
  const ours = model.listing(opts);
  assertSameListing(model.listing({ ...opts, noDirMtimes: true }).split('\n'), await listTree(theirs.rootfs, { ...opts, noDirMtimes: true }), ['applyLayer', 'umoci']);
  assert.match(ours, /^usr\/lib\/ping file 0644 0:0 \S+ 3:\w+ x:security\.capability=0100000200200000000000000000000000000000$/m);
  assert.match(ours, /^usr\/lib\/one file 0644 0:0 981173106\.123456789 1:\w+ hl=usr\/lib\/one$/m);
  assert.match(ours, /^usr\/lib\/one-link file .* hl=usr\/lib\/one$/m);
  assert.match(ours, /^usr\/lib\/sparse file 0644 0:0 \S+ 20971520:/m);
  assert.match(ours, /^opq\/\+early file/m);
  assert.doesNotMatch(ours, /^(opq\/lower|opq\/sub|gone|usr\/lib\/big\.bin)/m);
  assert.match(ours, /^usr\/lib\/old file 0644 0:0 -315619200\.500000000 /m);
});
