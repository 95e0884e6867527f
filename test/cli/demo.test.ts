import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import { MAIN, obd } from '../helpers/cli.ts';
import { tempDir, withTempDir } from '../helpers/temp.ts';

const run = promisify(execFile);

test('obd demo --no-serve builds three snapshot layers whose stack equals the final disk', async () => {
  await withTempDir(async (dir) => {
    const r = await obd(['demo', '--no-serve', '--json', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.equal(s.verified, true);
    assert.equal(s.flattenedSha256, s.expectedSha256);
    assert.equal(s.layers.length, 3);
    assert.equal(s.layers[1].parentUuid, s.layers[0].uuid);
    assert.equal(s.layers[2].parentUuid, s.layers[1].uuid);
    assert.ok(s.layers[2].storedBytes < s.layers[0].storedBytes / 4, 'later snapshots hold only changed blocks');
    assert.deepEqual((await readdir(dir)).sort(), ['images', 'layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt']);
    assert.match(s.image, /^oci:.*images:demo$/);
    assert.ok(s.layers.every((l: { blobBytes: number; storedBytes: number }) => l.blobBytes < l.storedBytes), 'blobs are compressed');
    // The layout holds the image on its own: three overlaybd layers under the tag.
    const inspected = await obd(['inspect', '--json', s.image]);
    assert.equal(inspected.code, 0, inspected.stderr);
    assert.equal(JSON.parse(inspected.stdout).manifest.layers.length, 3);
  }, 'obd-demo-');
});

test('obd demo serves the stack over NBD until SIGINT; qemu-img and nbdcopy read it', async (t) => {
  const dir = await tempDir(t, 'obd-demo-');
  const child = spawn(process.execPath, [MAIN, 'demo', '--json', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    const ready = await new Promise<{ uri: string; flattenedSha256: string }>((resolve, reject) => {
      const check = () => {
        try {
          resolve(JSON.parse(out));
        } catch {
          /* not complete yet */
        }
      };
      child.stdout.on('data', check);
      exited.then((code) => reject(new Error(`demo exited early (${code})`)));
    });
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', ready.uri])).stdout);
    assert.equal(info['virtual-size'], 64 * 1024 * 1024);
    const { stdout } = await run('bash', ['-c', `nbdcopy '${ready.uri}' - | sha256sum`]);
    assert.equal(stdout.split(' ')[0], ready.flattenedSha256);
    child.kill('SIGINT');
    assert.equal(await exited, 0);
  } finally {
    child.kill('SIGKILL');
  }
});
