/**
 * Defaults the CLI shows in its help, in a module of their own that imports nothing, so that
 * registering the commands loads no registry code (node:http, node:crypto).
 */

/** Cache capacity when none is given. */
export const DEFAULT_CACHE_SIZE = 4 * 2 ** 30;

/** How long a request may go without headers or data. */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

/** The unit a lazy source fetches and caches, when none is given. */
export const DEFAULT_UNIT = 256 * 1024;
