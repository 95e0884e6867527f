/**
 * `obd attach` / `obd detach` against a running `obd serve --control`: an attached image
 * shares the layers it has in common with the served exports (GET /metrics counts them), a
 * writable one records its writes and is flushed when detached, its clients are
 * disconnected, and the exports that stay go on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { obd, serveJson } from '../helpers/cli.ts';
import { DIGESTS, FIXTURES } from '../helpers/recipes.ts';
import { tempDir } from '../helpers/temp.ts';
import { RawClient } from '../nbd/helpers/client.ts';

const run = promisify(execFile);
const [L1, L2, L3] = ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map((n) => path.join(FIXTURES, 'lsmt', n)) as [string, string, string];

async function nbdSha(uri: string): Promise<string> {
  const { stdout } = await run('bash', ['-o', 'pipefail', '-c', `nbdcopy '${uri}' - | sha256sum`]);
  return stdout.split(' ')[0]!;
}

test('attach and detach through the control API; /metrics there counts the shared layers', async (t) => {
  const dir = await tempDir(t, 'obd-attach-');
  const socket = path.join(dir, 's.sock');
  const control = path.join(dir, 'c.sock');
  const s = await serveJson([L1, L2, '--export', 'a', '--socket', socket, '--control', control]);
  const uri = (name: string) => `nbd+unix:///${name}?socket=${socket}`;
  const metric = async (name: string) => {
    const { stdout } = await run('curl', ['-sf', '--unix-socket', control, 'http://control/metrics']);
    const line = stdout.split('\n').find((l) => l.startsWith(name + ' '));
    return line === undefined ? undefined : Number(line.slice(name.length + 1));
  };
  try {
    assert.equal(await metric('obd_layers_open'), 2);
    let r = await obd(['attach', '--control', control, 'b', L1, L2, L3, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).attached, true);
    assert.equal(await nbdSha(uri('b')), DIGESTS.layer123);
    assert.equal(await metric('obd_layers_open'), 3, 'b opened only layer3');
    assert.equal(await metric('obd_layer_users'), 5);
    r = await obd(['attach', '--control', control, 'b', L1]);
    assert.notEqual(r.code, 0, 'a name in use is refused');
    assert.match(r.stderr, /exists already/);

    const upper = [path.join(dir, 'w.data'), path.join(dir, 'w.index')];
    r = await obd(['attach', '--control', control, 'w', L1, L2, '--writable', '--upper', ...upper]);
    assert.equal(r.code, 0, r.stderr);
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5c 1M 64k', uri('w')]);
    const client = await RawClient.connect({ socket });
    await client.handshake({ name: 'w' });
    r = await obd(['detach', '--control', control, 'w']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await client.closedByServer(), true, 'the detached export\'s client was disconnected');
    await assert.rejects(nbdSha(uri('w')));
    r = await obd(['detach', '--control', control, 'w']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /no export "w"/);
    // The writes are in the upper: serve it again on its own and read them back.
    r = await obd(['detach', '--control', control, 'b']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await metric('obd_layers_open'), 2);
    assert.equal(await nbdSha(uri('a')), DIGESTS.layer12, 'the export that stayed still reads');
  } finally {
    assert.equal(await s.stop(), 0);
  }
  const again = await serveJson([L1, L2, '--upper', path.join(dir, 'w.data'), path.join(dir, 'w.index'), '--read-only', '--socket', path.join(dir, 's2.sock')]);
  try {
    await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x5c 1M 64k', again.ready.exports[0]!.uri]);
  } finally {
    assert.equal(await again.stop(), 0);
  }
});
