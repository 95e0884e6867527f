import { ObdError, type Errno } from '../io/errors.ts';

/**
 * A connection ends without a reply: the client broke a protocol rule the server cannot
 * answer (bad magic, unknown client flags, an unusable export name after EXPORT_NAME), the
 * client went away, or the server is shutting down.
 */
export class NbdDisconnect extends ObdError {
  override readonly errno: Errno = 'EINVAL';
}

/** Setting up the server failed (bad export table, address in use, …). */
export class NbdServerError extends ObdError {
  override readonly errno: Errno = 'EINVAL';
}

/** An NBD server refused or broke the conversation with our client (handshake, reply, error reply). */
export class NbdClientError extends ObdError {
  override readonly errno: Errno = 'EIO';
}
