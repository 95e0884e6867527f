/**
 * For the applier's ext4 tests: a listing of any ApplyTarget through its own readdir/stat (what fuse2fs cannot show: nanosecond mtimes, directory link counts).
 */
import type { ApplyTarget } from '../../src/convert/apply.ts';
import { byteKey, printable } from '../../src/convert/bytes.ts';

/** `PATH TYPE MODE UID:GID MTIME LINKS [SIZE]` per path (sizes of non-directories), sorted by path bytes. */
export async function apiListing(fs: ApplyTarget): Promise<string[]> {
  const rows: Array<[string, string]> = [];
  const walk = async (ino: number, path: string): Promise<void> => {
    const st = await fs.stat(ino);
    const mtime = `${st.mtime.sec}.${String(st.mtime.nsec).padStart(9, '0')}`;
    const size = st.type === 'dir' ? '' : ` ${st.size}`;
    rows.push([path, `${st.type} ${st.mode.toString(8).padStart(4, '0')} ${st.uid}:${st.gid} ${mtime} ${st.links}${size}`]);
    if (st.type !== 'dir') return;
    for (const e of await fs.readdir(ino)) await walk(e.ino, path === '' ? byteKey(e.name) : `${path}/${byteKey(e.name)}`);
  };
  await walk(fs.root, '');
  rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return rows.map(([p, rest]) => `${p === '' ? '.' : printable(Buffer.from(p, 'latin1'))} ${rest}`);
}
