/**
 * Promises over node:fs's callback functions, for the code a local command runs (checking its
 * outputs, writing one atomically, exporting a disk): node:fs/promises loads readline, the
 * REPL's history, fs watchers and node:os with it (~2.6 ms of CPU, src/io/builtins.ts). Same
 * results and errors as node:fs/promises, with file descriptors in place of FileHandles.
 */
import { close, fsync, ftruncate, open, readdir, realpath, rename, rm, stat, writeFile } from 'node:fs';
import { promisify } from 'node:util';

export const closeFd = promisify(close);
export const fsyncFd = promisify(fsync);
export const ftruncateFd = promisify(ftruncate);
export const openFd = promisify(open);
export const readdirAsync = promisify(readdir);
export const realpathAsync = promisify(realpath);
export const renameAsync = promisify(rename);
export const rmAsync = promisify(rm);
export const statAsync = promisify(stat);
export const writeFileAsync = promisify(writeFile);
