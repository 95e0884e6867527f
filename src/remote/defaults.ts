/**
 * Default sizes of the remote read path, apart from the modules that use them so that a
 * command can show them in its help without loading the cache or the HTTP client.
 */

/** Cache capacity when none is given (`--cache-size`). */
export const DEFAULT_CACHE_SIZE = 4 * 2 ** 30;

/** Refill unit of lazy reads and cache entries (`--refill`). */
export const DEFAULT_UNIT = 256 * 1024;

/** How long a cache entry's new units may wait before their metadata is published (ms). */
export const DEFAULT_PUBLISH_DELAY_MS = 1000;

/** How long a request may go without headers or data (`--timeout`). */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
