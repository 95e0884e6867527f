/**
 * The table of named exports a server offers, and what each export advertises: size,
 * transmission flags and block-size constraints.
 */
import type { BlockDevice } from '../io/types.ts';
import { DeviceOps } from '../ops/device-ops.ts';
import { NbdServerError } from './errors.ts';
import {
  FLAG_CAN_MULTI_CONN,
  FLAG_HAS_FLAGS,
  FLAG_READ_ONLY,
  FLAG_SEND_CACHE,
  FLAG_SEND_DF,
  FLAG_SEND_FAST_ZERO,
  FLAG_SEND_FLUSH,
  FLAG_SEND_FUA,
  FLAG_SEND_TRIM,
  FLAG_SEND_WRITE_ZEROES,
  MIN_BLOCK,
} from './protocol.ts';

export interface NbdExportOptions {
  device: BlockDevice;
  /** Shown by `nbdinfo --list` and NBD_INFO_DESCRIPTION. */
  description?: string;
  /** Serve a writable device read-only. */
  readOnly?: boolean;
  /** Only clients that started TLS may use (or see) it; meaningful with TLS mode `on`. */
  tlsOnly?: boolean;
}

/** Export name → device (or device plus options). The empty name is the default export. */
export type NbdExportTable = Map<string, BlockDevice | NbdExportOptions> | Record<string, BlockDevice | NbdExportOptions>;

export interface ResolvedExport {
  readonly name: string;
  readonly device: BlockDevice;
  /** The checked, emulating operations every connection to this export goes through. */
  readonly ops: DeviceOps;
  readonly description: string;
  readonly readOnly: boolean;
  readonly tlsOnly: boolean;
  readonly size: number;
  /** Advertised minimum block size: 512, or 1 when the size is not a whole number of sectors. */
  readonly minBlock: number;
}

const MAX_NAME_BYTES = 4096;

export class ExportTable {
  readonly #byName = new Map<string, ResolvedExport>();
  readonly #defaultName: string | undefined;

  constructor(table: NbdExportTable, defaultExport?: string) {
    const entries = table instanceof Map ? [...table.entries()] : Object.entries(table);
    if (entries.length === 0) throw new NbdServerError('an NBD server needs at least one export');
    for (const [name, value] of entries) {
      if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES || name.includes('\0')) {
        throw new NbdServerError(`export name "${name.slice(0, 40)}…" is not a valid NBD string (≤ 4096 bytes, no NUL)`);
      }
      const opts: NbdExportOptions = 'device' in value ? value : { device: value };
      const dev = opts.device;
      const ops = new DeviceOps(dev, { readOnly: opts.readOnly });
      // Size read at each use: a live disk may grow, and later connections see the new size.
      this.#byName.set(name, {
        name,
        device: dev,
        ops,
        description: opts.description ?? '',
        readOnly: ops.readOnly,
        tlsOnly: Boolean(opts.tlsOnly),
        get size() {
          return dev.size;
        },
        get minBlock() {
          return dev.size % MIN_BLOCK === 0 ? MIN_BLOCK : 1;
        },
      });
    }
    if (defaultExport !== undefined && !this.#byName.has(defaultExport)) {
      throw new NbdServerError(`default export "${defaultExport}" is not one of the exports`);
    }
    this.#defaultName = defaultExport ?? (this.#byName.size === 1 ? entries[0]![0] : undefined);
  }

  /** Offers `name` from now on (a server adding an export while it serves). */
  add(name: string, value: BlockDevice | NbdExportOptions): ResolvedExport {
    if (this.#byName.has(name)) throw new NbdServerError(`export "${name}" exists already`);
    // Resolved as the constructor resolves every export.
    const exp = new ExportTable(new Map([[name, value]])).lookup(name)!;
    this.#byName.set(name, exp);
    return exp;
  }

  /** Stops offering `name` to new clients; the export removed, if there was one. */
  remove(name: string): ResolvedExport | undefined {
    const exp = this.#byName.get(name);
    this.#byName.delete(name);
    return exp;
  }

  /** All exports, in the order given. */
  list(): ResolvedExport[] {
    return [...this.#byName.values()];
  }

  /** The export a client asked for; the empty name selects the default export. */
  lookup(name: string): ResolvedExport | undefined {
    const exact = this.#byName.get(name);
    if (exact || name !== '' || this.#defaultName === undefined) return exact;
    return this.#byName.get(this.#defaultName);
  }
}

/** Transmission flags for `exp`; DF only once structured replies are negotiated. */
export function transmissionFlags(exp: ResolvedExport, structured: boolean): number {
  let flags = FLAG_HAS_FLAGS | FLAG_SEND_CACHE | FLAG_CAN_MULTI_CONN;
  // One device object serves every connection in this process, so a flush on any
  // connection covers writes from all of them: multi-conn is safe.
  if (exp.readOnly) flags |= FLAG_READ_ONLY;
  else {
    flags |= FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FAST_ZERO;
    if (exp.ops.capabilities.trim) flags |= FLAG_SEND_TRIM;
  }
  if (structured) flags |= FLAG_SEND_DF;
  return flags;
}
