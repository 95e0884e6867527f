/**
 * `obd serve` with several exports of images that share layers: each shared layer is fetched
 * from the registry once, whichever export reads it, and every export reads right; the
 * decoded-block budget is set with --memory.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { DIGESTS, FIXTURES } from '../helpers/recipes.ts';
import { obd, serveJson } from '../helpers/cli.ts';
import { tempDir } from '../helpers/temp.ts';
import { startCountingProxy } from '../remote/helpers/counting-proxy.ts';
import { startRegistry } from '../remote/helpers/registry.ts';

const run = promisify(execFile);
const LAYERS = ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map((n) => path.join(FIXTURES, 'lsmt', n));

async function sha256Of(uri: string): Promise<string> {
  const { stdout } = await run('bash', ['-o', 'pipefail', '-c', `nbdcopy '${uri}' - | sha256sum`]);
  return stdout.split(' ')[0]!;
}

test('serve: three exports over shared layers fetch each layer byte once and read right', async (t) => {
  const dir = await tempDir(t, 'obd-serve-shared-');
  const registry = await startRegistry();
  const proxy = await startCountingProxy({ host: '127.0.0.1', port: registry.port });
  t.after(async () => {
    await proxy.stop();
    await registry.stop();
  });
  for (const [files, tag] of [[LAYERS.slice(0, 2), 'a'], [LAYERS, 'b']] as const) {
    const r = await obd(['push', ...files, `${registry.host}/shared/img:${tag}`]);
    assert.equal(r.code, 0, r.stderr);
  }
  const ref = (tag: string) => `${proxy.host}/shared/img:${tag}`;
  const s = await serveJson([ref('a'), '--export', 'a', '--export', `b=${ref('b')}`, '--export', `b2=${ref('b')}`, '--memory', '8M', '--socket', path.join(dir, 's.sock')]);
  try {
    const uri = (name: string) => s.ready.exports.find((e) => e.uri.includes(`/${name}?`))!.uri;
    assert.equal(await sha256Of(uri('b')), DIGESTS.layer123);
    assert.equal(await sha256Of(uri('a')), DIGESTS.layer12);
    assert.equal(await sha256Of(uri('b2')), DIGESTS.layer123);
    assert.ok(proxy.blobBytes() > 0);
    assert.equal(proxy.refetchedBytes(), 0, `no byte fetched twice (${proxy.fetches.length} blob GETs)`);
  } finally {
    assert.equal(await s.stop(), 0);
  }
});

test('serve --memory takes a size and refuses anything else', async () => {
  const r = await obd(['serve', LAYERS[0]!, '--memory', 'lots']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--memory/);
});
