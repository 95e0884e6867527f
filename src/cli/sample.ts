/**
 * The sample image of `obd demo`: an ext4 disk and two later snapshots of it, each stored as
 * a sealed layer holding only the blocks that changed. Built with e2fsprogs (mkfs.ext4 -d
 * to populate, debugfs -w to change files) so no mount or root is needed.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { openStack } from '../image/open.ts';
import { ObdError } from '../io/errors.ts';
import { importRaw } from '../lsmt/import.ts';

const run = promisify(execFile);
const DISK = 64 * 1024 * 1024;

export interface SampleLayer {
  file: string;
  uuid: string;
  description: string;
  dataBlocks: number;
  zeroedBlocks: number;
}

function textFile(lines: number, start = 0): string {
  let s = '';
  for (let i = start; i < start + lines; i++) s += `overlaybd-ts sample line ${i}: layered block devices, one merged index.\n`;
  return s;
}

async function tool(cmd: string, args: string[]): Promise<void> {
  try {
    await run(cmd, args, { env: { ...process.env, E2FSPROGS_FAKE_TIME: '1767225600' } });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new ObdError(`${cmd} not found: the demo builds its sample disk with e2fsprogs (apt-get install e2fsprogs)`);
    throw new ObdError(`${cmd} ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`);
  }
}

/** Builds layer1..3 in `dir` and returns them bottom → top. */
export async function buildSampleImage(dir: string): Promise<SampleLayer[]> {
  const work = path.join(dir, 'work');
  await rm(work, { recursive: true, force: true });
  await mkdir(path.join(work, 'tree', 'etc'), { recursive: true });
  await mkdir(path.join(work, 'tree', 'data'), { recursive: true });
  const tree = path.join(work, 'tree');
  await writeFile(path.join(tree, 'etc', 'os-release'), 'NAME="overlaybd-ts sample"\nVERSION="1"\n');
  await writeFile(path.join(tree, 'README.txt'), 'Snapshot 1: the base disk.\n');
  await writeFile(path.join(tree, 'data', 'text.txt'), textFile(6000));
  await writeFile(path.join(tree, 'data', 'random.bin'), randomBytes(512 * 1024));

  const raw = path.join(work, 'disk.raw');
  await writeFile(raw, '');
  await rm(raw);
  await run('truncate', ['-s', String(DISK), raw]);
  await tool('mkfs.ext4', ['-q', '-F', '-L', 'obd-sample', '-U', 'b0b0b0b0-0000-4000-8000-000000000001', '-E', 'hash_seed=b0b0b0b0-0000-4000-8000-000000000002', '-d', tree, raw]);

  const layers: SampleLayer[] = [];
  const snapshot = async (n: number, description: string): Promise<void> => {
    const file = path.join(dir, `layer${n}.lsmt`);
    const base = n === 1 ? undefined : await openStack(layers.map((l) => l.file));
    try {
      const st = await importRaw(raw, file, { base, userTag: description });
      layers.push({ file, uuid: st.uuid, description, dataBlocks: st.dataBlocks, zeroedBlocks: st.zeroedBlocks });
    } finally {
      await base?.close();
    }
  };
  await snapshot(1, 'base: ext4 with /etc, /data and README.txt');

  // Snapshot 2: new files, a changed file.
  await writeFile(path.join(work, 'added.txt'), textFile(2000, 100000));
  await writeFile(path.join(work, 'README.txt'), 'Snapshot 2: added /data/added.txt and /home.\n');
  await writeFile(path.join(work, 'cmds2'), [`cd /data`, `write ${work}/added.txt added.txt`, `cd /`, `rm README.txt`, `write ${work}/README.txt README.txt`, `mkdir home`].join('\n') + '\n');
  await tool('debugfs', ['-w', '-f', path.join(work, 'cmds2'), raw]);
  await snapshot(2, 'added /data/added.txt and /home');

  // Snapshot 3: a file removed, another written.
  await writeFile(path.join(work, 'notes.txt'), 'Snapshot 3: /data/random.bin removed, /home/notes.txt written.\n');
  await writeFile(path.join(work, 'cmds3'), [`rm /data/random.bin`, `cd /home`, `write ${work}/notes.txt notes.txt`].join('\n') + '\n');
  await tool('debugfs', ['-w', '-f', path.join(work, 'cmds3'), raw]);
  await snapshot(3, 'removed /data/random.bin, wrote /home/notes.txt');

  await copyFile(raw, path.join(dir, 'expected.raw'));
  await rm(work, { recursive: true, force: true });
  return layers;
}
