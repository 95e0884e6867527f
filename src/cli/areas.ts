/** The CLI's command areas: each module registers its commands; the list lets `obd` load only one. */
import type { Command } from 'commander';

export type Area = { register(program: Command): void };

/** Each area's module and the commands it registers, in help order. */
export const AREAS: [commands: string[], load: () => Promise<Area>][] = [
  [['info', 'export', 'map'], () => import('./layers.ts')],
  [['create', 'commit', 'merge', 'import', 'rw-info'], () => import('./snapshots.ts')],
  [['diff'], () => import('./maintenance.ts')],
  [['zfile'], () => import('./zfile.ts')],
  [['serve'], () => import('./nbd.ts')],
  [['mount', 'umount'], () => import('./mount.ts')],
  [['snapshot', 'compact', 'resize'], () => import('./live.ts')],
  [['attach', 'detach'], () => import('./attach.ts')],
  [['push', 'pull', 'copy', 'inspect'], () => import('./remote.ts')],
  [['convert'], () => import('./convert.ts')],
  [['verity', 'verify', 'cache'], () => import('./verity.ts')],
  [['demo'], () => import('./demo.ts')],
];
