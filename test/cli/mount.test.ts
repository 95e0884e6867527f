/**
 * `obd mount` / `obd umount` end to end: as an unprivileged user through nbdfuse + fuse2fs
 * (no kernel module, no privilege: the user is made here and the commands run through
 * runuser), and as root through nbdfuse + loop + mount. Files read back by digest, writes
 * land in the upper layer and survive a remount, umount stops every process it started.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { MAIN, obd } from '../helpers/cli.ts';
import { R } from '../helpers/recipes.ts';
import { suiteTempDir } from '../helpers/temp.ts';
import { asTestUser, ensureTestUser, obdAsTestUser, TEST_USER } from '../helpers/user.ts';
import { kernelSkipReason } from '../nbd/helpers/kernel.ts';
import { missing, sha256 } from '../nbd/helpers/run.ts';

/** Why the unprivileged test cannot run here, or false. */
function userSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'making a test user needs root';
  const m = missing('nbdfuse', 'fuse2fs', 'fusermount3', 'runuser', 'mkfs.ext4');
  if (m.length) return `missing tools: ${m.join(', ')} (scripts/setup-peers.sh installs them)`;
  if (!existsSync('/dev/fuse')) return 'no /dev/fuse: FUSE is not available on this machine';
  if ((statSync('/dev/fuse').mode & 0o006) !== 0o006) return '/dev/fuse is not readable and writable by other users (scripts/setup-peers.sh makes it 0666, as udev does)';
  return false;
}

/** A small ext4 image with known files, imported as a layer. */
async function makeImage(dir: string): Promise<Record<string, string>> {
  const src = path.join(dir, 'src');
  await mkdir(path.join(src, 'sub'), { recursive: true });
  const files: Record<string, Buffer> = { 'hello.txt': Buffer.from('hello from a layer\n'), 'sub/data.bin': R('mount-data', 1536 * 1024) };
  for (const [n, b] of Object.entries(files)) await writeFile(path.join(src, n), b);
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', src, path.join(dir, 'base.raw'), '32M'], { stdio: 'ignore' });
  const imp = await obd(['import', path.join(dir, 'base.raw'), path.join(dir, 'base.lsmt')]);
  assert.equal(imp.code, 0, imp.stderr);
  return Object.fromEntries(Object.entries(files).map(([n, b]) => [n, sha256(b)]));
}

function mounted(dir: string): boolean {
  return execFileSync('cat', ['/proc/self/mountinfo'], { encoding: 'utf8' }).split('\n').some((l) => l.split(' ')[4] === dir);
}

function alive(pid: number): boolean {
  try {
    const st = execFileSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return !/^\S+ \(.*\) [ZX] /.test(st);
  } catch {
    return false;
  }
}

describe('obd mount as an unprivileged user (nbdfuse + fuse2fs)', { skip: userSkipReason() }, () => {
  const tmp = suiteTempDir('obd-mount-user-');
  let digests: Record<string, string>;
  let dir: string;
  before(async () => {
    ensureTestUser();
    dir = tmp.path;
    digests = await makeImage(dir);
    await mkdir(path.join(dir, 'mnt'));
    execFileSync('chown', ['-R', `${TEST_USER}:`, dir]);
  });

  it('browses the image read-only, then records writes in the upper layer that a remount shows; umount stops everything', async () => {
    const mnt = path.join(dir, 'mnt');
    const m = await obdAsTestUser(['mount', '--json', 'base.lsmt', 'mnt'], dir);
    assert.equal(m.code, 0, m.stderr);
    const info = JSON.parse(m.stdout) as { via: string; serve: number; nbdfuse: number; fuse2fs: number; state: string };
    assert.equal(info.via, 'fuse2fs');
    assert.ok(mounted(mnt));
    try {
      const sums = await asTestUser(['sha256sum', 'hello.txt', 'sub/data.bin'], mnt);
      assert.equal(sums.code, 0, sums.stderr);
      for (const [n, d] of Object.entries(digests)) assert.match(sums.stdout, new RegExp(`^${d}  ${n}$`, 'm'), n);
      const write = await asTestUser(['sh', '-c', 'echo x > new.txt'], mnt);
      assert.notEqual(write.code, 0, 'a read-only mount refuses writes');
    } finally {
      const u = await obdAsTestUser(['umount', 'mnt'], dir);
      assert.equal(u.code, 0, u.stderr);
    }
    assert.ok(!mounted(mnt));
    for (const pid of [info.serve, info.nbdfuse, info.fuse2fs]) assert.ok(!alive(pid), `pid ${pid} stopped`);
    assert.ok(!existsSync(info.state), 'the state directory is removed');

    const w = await obdAsTestUser(['mount', 'base.lsmt', 'mnt', '--writable', '--upper', 'rw.data', 'rw.index'], dir);
    assert.equal(w.code, 0, w.stderr);
    const big = R('mount-written', 700 * 1024);
    await writeFile(path.join(dir, 'big.src'), big);
    const cp = await asTestUser(['sh', '-c', 'cp ../big.src big.bin && echo changed > hello.txt && mkdir -p d/e && echo deep > d/e/f'], mnt);
    assert.equal(cp.code, 0, cp.stderr);
    const u2 = await obdAsTestUser(['umount', 'mnt'], dir);
    assert.equal(u2.code, 0, u2.stderr);
    assert.match(u2.stdout, /upper layer is flushed/);
    assert.ok((await readFile(path.join(dir, 'rw.data'))).length > big.length, 'the writes are in the upper layer');

    // Read-only again, through the upper: what was written is there, the rest unchanged.
    const r = await obdAsTestUser(['mount', 'base.lsmt', 'mnt', '--upper', 'rw.data', 'rw.index'], dir);
    assert.equal(r.code, 0, r.stderr);
    try {
      const sums = await asTestUser(['sh', '-c', 'sha256sum big.bin sub/data.bin && cat hello.txt d/e/f'], mnt);
      assert.equal(sums.code, 0, sums.stderr);
      assert.match(sums.stdout, new RegExp(`^${sha256(big)}  big.bin$`, 'm'));
      assert.match(sums.stdout, new RegExp(`^${digests['sub/data.bin']}  sub/data.bin$`, 'm'));
      assert.match(sums.stdout, /^changed\ndeep$/m);
    } finally {
      assert.equal((await obdAsTestUser(['umount', 'mnt'], dir)).code, 0);
    }
  });

  it('refuses clearly: nothing mounted, a mount on a busy directory, a filesystem still in use', async () => {
    const none = await obdAsTestUser(['umount', 'mnt'], dir);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /^obd: .*mnt: nothing mounted here by obd mount/m);
    const bad = await obdAsTestUser(['mount', 'missing.lsmt', 'mnt'], dir);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^obd: obd serve: missing.lsmt: no such layer file$/m);
    assert.ok(!mounted(path.join(dir, 'mnt')));
    assert.match((await obdAsTestUser(['umount', 'mnt'], dir)).stderr, /nothing mounted here/, 'a failed mount leaves no state');
    const root = await obdAsTestUser(['mount', 'base.lsmt', 'mnt', '--via', 'loop'], dir);
    assert.equal(root.code, 1);
    assert.match(root.stderr, /--via loop needs root/);
    const m = await obdAsTestUser(['mount', 'base.lsmt', 'mnt'], dir);
    assert.equal(m.code, 0, m.stderr);
    try {
      const twice = await obdAsTestUser(['mount', 'base.lsmt', 'mnt'], dir);
      assert.equal(twice.code, 1);
      assert.match(twice.stderr, /already mounted here/);
      // A shell sitting in the mount keeps it busy: umount fails and leaves everything running.
      const busy = await asTestUser(['sh', '-c', `cd mnt && exec "$0" "$1" umount "$2"`, process.execPath, MAIN, path.join(dir, 'mnt')], dir);
      assert.equal(busy.code, 1, busy.stdout);
      assert.match(busy.stderr, /^obd: fusermount3 -u .*busy/im);
      assert.ok(mounted(path.join(dir, 'mnt')), 'still mounted after the refused umount');
      const ls = await asTestUser(['ls', 'sub'], path.join(dir, 'mnt'));
      assert.equal(ls.stdout.trim(), 'data.bin', 'and still served');
    } finally {
      if (mounted(path.join(dir, 'mnt'))) assert.equal((await obdAsTestUser(['umount', 'mnt'], dir)).code, 0);
    }
  });
});

describe('obd mount as root (nbdfuse + loop + mount)', { skip: kernelSkipReason() }, () => {
  const tmp = suiteTempDir('obd-mount-root-');
  let digests: Record<string, string>;
  before(async () => {
    digests = await makeImage(tmp.path);
  });

  it('mounts through a loop device, reads the files, writes through --writable, and unmounts', async () => {
    const dir = tmp.path;
    const mnt = path.join(dir, 'mnt');
    await mkdir(mnt);
    const m = await obd(['mount', '--json', path.join(dir, 'base.lsmt'), mnt, '--writable', '--upper', path.join(dir, 'rw.data'), path.join(dir, 'rw.index')]);
    assert.equal(m.code, 0, m.stderr);
    const info = JSON.parse(m.stdout) as { via: string; loop: string; serve: number; nbdfuse: number };
    assert.equal(info.via, 'loop');
    assert.match(info.loop, /^\/dev\/loop\d+$/);
    try {
      for (const [n, d] of Object.entries(digests)) assert.equal(sha256(await readFile(path.join(mnt, n))), d, n);
      await writeFile(path.join(mnt, 'root.txt'), 'written as root\n');
    } finally {
      const u = await obd(['umount', mnt]);
      assert.equal(u.code, 0, u.stderr);
    }
    assert.ok(!mounted(mnt));
    for (const pid of [info.serve, info.nbdfuse]) assert.ok(!alive(pid), `pid ${pid} stopped`);
    const losetup = execFileSync('losetup', ['-a'], { encoding: 'utf8' });
    assert.doesNotMatch(losetup, new RegExp(`${info.loop}:.*${path.basename(dir)}`), 'the loop device is detached');
    const r = await obd(['mount', path.join(dir, 'base.lsmt'), mnt, '--upper', path.join(dir, 'rw.data'), path.join(dir, 'rw.index')]);
    assert.equal(r.code, 0, r.stderr);
    try {
      assert.equal(await readFile(path.join(mnt, 'root.txt'), 'utf8'), 'written as root\n');
    } finally {
      assert.equal((await obd(['umount', mnt])).code, 0);
    }
  });
  it('a mount whose server was killed: umount clears what is left, says what happened, and leaves no state', async () => {
    const dir = tmp.path;
    const mnt = path.join(dir, 'mnt2');
    await mkdir(mnt);
    const m = await obd(['mount', '--json', path.join(dir, 'base.lsmt'), mnt, '--via', 'fuse2fs']);
    assert.equal(m.code, 0, m.stderr);
    const info = JSON.parse(m.stdout) as { serve: number; nbdfuse: number; fuse2fs: number; state: string };
    process.kill(info.serve, 'SIGKILL');
    const u = await obd(['umount', mnt]);
    assert.equal(u.code, 1);
    assert.match(u.stderr, new RegExp(`^obd: obd serve \\(pid ${info.serve}\\) had already exited`, 'm'));
    assert.ok(!mounted(mnt) && !mounted(path.join(info.state, 'fuse')));
    for (const pid of [info.nbdfuse, info.fuse2fs]) assert.ok(!alive(pid), `pid ${pid} stopped`);
    assert.ok(!existsSync(info.state));
    assert.match((await obd(['umount', mnt])).stderr, /nothing mounted here/);
  });
});
