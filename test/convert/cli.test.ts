/**
 * `obd convert` as users run it: --json output, the same bytes under another time zone, umask
 * and work directory, the output rules (an existing tag needs --force, the source is never the
 * destination), and the result served by `obd serve`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { collect, MAIN, obd, serveJson, type CliResult } from '../helpers/cli.ts';
import { tempDir } from '../helpers/temp.ts';
import { layer, tarOf, writeOciLayout, writeTree } from '../helpers/small-images.ts';
import { blobFile, layoutManifest } from './helpers/check.ts';

/** obd under `sh` with a umask and environment of the test's choosing. */
function obdWith(args: string[], umask: string, env: NodeJS.ProcessEnv, cwd: string): Promise<CliResult> {
  return collect('sh', ['-c', `umask ${umask}; exec "$0" "$@"`, process.execPath, MAIN, ...args], { env, cwd });
}

async function smallImage(dir: string): Promise<string> {
  await writeTree(path.join(dir, 'l0'), { 'etc/os-release': 'ID=test\n', 'usr/bin/tool': { mode: 0o755, data: 'tool' } });
  await writeTree(path.join(dir, 'l1'), { 'etc/.wh.os-release': '', 'app/main.js': 'console.log(1)\n' });
  const layout = path.join(dir, 'src');
  await writeOciLayout(layout, [layer(tarOf(path.join(dir, 'l0')), 'gzip'), layer(tarOf(path.join(dir, 'l1')), 'zstd')], { tag: 'v1' });
  return layout;
}

test('obd convert --json: the same image under another time zone, umask and work directory, byte for byte', async (t) => {
  const dir = await tempDir(t);
  const layout = await smallImage(dir);
  const a = await obdWith(['convert', '--json', '--vsize', '128M', `oci:${layout}:v1`, `oci:${dir}/a:obd`], '022', { TZ: 'UTC' }, dir);
  assert.equal(a.code, 0, a.stderr);
  const b = await obdWith(['convert', '--json', '--vsize', '128M', '-j', '2', '--tmp-dir', layout, `oci:${layout}:v1`, `oci:${dir}/b:obd`], '077', { TZ: 'Pacific/Kiritimati', LANG: 'de_DE.UTF-8' }, layout);
  assert.equal(b.code, 0, b.stderr);
  const ra = JSON.parse(a.stdout);
  const rb = JSON.parse(b.stdout);
  assert.equal(ra.digest, rb.digest);
  assert.equal(ra.layers.length, 2);
  for (const l of ra.layers) {
    for (const k of ['index', 'diffId', 'chainId', 'uuid', 'parentUuid', 'digest', 'size', 'cached', 'ms']) assert.ok(k in l, `layer field ${k}`);
  }
  const ma = await layoutManifest(`${dir}/a`, 'obd');
  const mb = await layoutManifest(`${dir}/b`, 'obd');
  assert.deepEqual(ma.bytes, mb.bytes);
  for (const l of ma.doc.layers) assert.deepEqual(await readFile(blobFile(`${dir}/a`, l.digest)), await readFile(blobFile(`${dir}/b`, l.digest)));
  assert.deepEqual(await readFile(blobFile(`${dir}/a`, ma.doc.config.digest)), await readFile(blobFile(`${dir}/b`, mb.doc.config.digest)));
});

test('obd convert: an existing destination tag needs --force, the source is never the destination, errors are JSON with --json', async (t) => {
  const dir = await tempDir(t);
  const layout = await smallImage(dir);
  const args = ['convert', '--vsize', '128M', `oci:${layout}:v1`, `oci:${dir}/out:obd`];
  assert.equal((await obd(args)).code, 0);
  const again = await obd(args);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already holds an image at the tag "obd".*--force/);
  const forced = await obd([...args, '--force']);
  assert.equal(forced.code, 0, forced.stderr);
  assert.match(forced.stdout, /converted oci:.*src:v1@sha256:[0-9a-f]{64} → oci:.*out:obd@sha256:/);

  const self = await obd(['convert', '--json', '--force', `oci:${layout}:v1`, `oci:${layout}:v1`]);
  assert.equal(self.code, 1);
  assert.match(JSON.parse(self.stdout).error.message, /is the source image/);
  const usage = await obd(['convert', '--json', `oci:${layout}:v1`]);
  assert.notEqual(usage.code, 0);
  assert.equal(JSON.parse(usage.stdout).error.code, 'EINVAL');
  const help = await obd(['convert', '--help']);
  assert.match(help.stdout, /Examples:\n {2}obd convert docker-archive:/);
});

test('the converted image is served by obd serve', async (t) => {
  const dir = await tempDir(t);
  const layout = await smallImage(dir);
  const r = await obd(['convert', '--json', '--vsize', '128M', `oci:${layout}:v1`, `oci:${dir}/out:obd`]);
  assert.equal(r.code, 0, r.stderr);
  const server = await serveJson(['--socket', path.join(dir, 'nbd.sock'), `oci:${dir}/out:obd`]);
  try {
    assert.equal(server.ready.exports.length, 1);
    // A real NBD client sees the virtual size, and the ext4 superblock magic at 1080.
    assert.equal(execFileSync('nbdinfo', ['--size', server.ready.exports[0]!.uri], { encoding: 'utf8' }).trim(), String(128 << 20));
    execFileSync('nbdcopy', [server.ready.exports[0]!.uri, path.join(dir, 'disk.raw')]);
    assert.deepEqual([...(await readFile(path.join(dir, 'disk.raw'))).subarray(1080, 1082)], [0x53, 0xef]);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});
