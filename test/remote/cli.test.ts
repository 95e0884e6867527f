/** `obd push / pull / inspect / copy` as a user runs them, against a real registry. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { FIXTURES } from '../helpers/recipes.ts';
import { startRegistry, type RunningRegistry } from './helpers/registry.ts';
import { tempDir } from '../helpers/temp.ts';

const OBD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.ts');
const run = promisify(execFile);

async function obd(args: string[], home: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [OBD, ...args], { env: { ...process.env, HOME: home, DOCKER_CONFIG: path.join(home, '.docker') } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('obd remote commands', () => {
  let reg: RunningRegistry;
  before(async () => {
    reg = await startRegistry({ users: { bob: 'hunter2' } });
  });
  after(() => reg.stop());

  test('push, inspect, pull with --json and credentials from docker config or --creds-file', async (t) => {
    const home = await tempDir(t);
    const creds = path.join(home, 'creds.json');
    await writeFile(creds, JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from('bob:hunter2').toString('base64') } } }));
    const ref = `${reg.host}/cli/app:v1`;
    const denied = await obd(['push', path.join(FIXTURES, 'lsmt', 'layer1.lsmt'), ref], home);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /^obd: .*credentials/m);

    const push = await obd(['push', '--json', '--creds-file', creds, '--fs-type', 'ext4', path.join(FIXTURES, 'lsmt', 'layer1.lsmt'), path.join(FIXTURES, 'lsmt', 'layer2.lsmt'), ref], home);
    assert.equal(push.code, 0, push.stderr);
    const pr = JSON.parse(push.stdout);
    assert.equal(pr.layers.length, 2);
    assert.match(pr.digest, /^sha256:[0-9a-f]{64}$/);

    await mkdir(path.join(home, '.docker'));
    await writeFile(path.join(home, '.docker', 'config.json'), JSON.stringify({ auths: { [`http://${reg.host}`]: { username: 'bob', password: 'hunter2' } } }));
    const inspect = await obd(['inspect', '--json', ref], home);
    assert.equal(inspect.code, 0, inspect.stderr);
    const ir = JSON.parse(inspect.stdout);
    assert.equal(ir.digest, pr.digest);
    assert.equal(ir.manifest.layers[1].annotations['containerd.io/snapshot/overlaybd/blob-fs-type'], 'ext4');

    const out = path.join(home, 'pulled');
    const pull = await obd(['pull', '--json', '--creds-file', creds, ref, out], home);
    assert.equal(pull.code, 0, pull.stderr);
    const pl = JSON.parse(pull.stdout);
    assert.equal(pl.digest, pr.digest);
    assert.ok(pl.layers.every((l: { fetched: boolean }) => l.fetched));

    // A target that names no tag gets `latest`, as in push (and skopeo's docker://), not the source's tag.
    const copy = await obd(['pull', '--json', '--creds-file', creds, ref, `oci:${path.join(home, 'layout')}`], home);
    assert.equal(copy.code, 0, copy.stderr);
    const human = await obd(['inspect', `oci:${path.join(home, 'layout')}:latest`], home);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /layer 1 sha256:[0-9a-f]{64} .* overlaybd 0\.1\.0 ext4/);
  });

  test('clear errors: bad reference, missing image, not a layer', async (t) => {
    const home = await tempDir(t);
    const bad = await obd(['inspect', 'Not/A:Ref!'], home);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /obd: .*bad repository component|obd: .*bad tag/);
    const missing = await obd(['inspect', `oci:${home}/nothing`], home);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /not found/);
    const notLayer = await obd(['push', path.join(FIXTURES, 'MANIFEST.md'), `oci:${home}/l`], home);
    assert.equal(notLayer.code, 1);
    assert.match(notLayer.stderr, /not an overlaybd layer/);
  });
});
