/** `obd`: the command line over the overlaybd-ts library. Commands live in one file per area. */
import { Command, CommanderError } from 'commander';
import { AREAS } from './areas.ts';
import { mayBeTerminal, reportError, wantsJson, writeOut } from './common.ts';

/**
 * Runs one `obd` command line. A function, not top-level code, so that the launcher can run it
 * from the CommonJS bundle as well (top-level await exists only in ES modules).
 */
export async function main(argv: string[] = process.argv): Promise<void> {
  const program = new Command('obd')
    .description('OverlayBD layered block-device images: LSMT layers, ZFile compression, registries, NBD export')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)');

  // Start-up time is most of a short command's run (e.g. a commit), so only the area that
  // owns the command is loaded; help and unknown commands load them all.
  const first = argv.slice(2).find((a) => !a.startsWith('-'));
  const owner = AREAS.find(([commands]) => first !== undefined && commands.includes(first));

  // Help to a file or a pipe goes through fd 1, as results do (writeOut): commander would make
  // process.stdout to write it and to ask its width and colours (off a terminal: its 80
  // columns, none). Set before the areas register, so that every command inherits it.
  if (!mayBeTerminal(1)) program.configureOutput({ writeOut, getOutHelpWidth: () => 80, getOutHasColors: () => false });

  // With --json, usage errors are reported as JSON as well: commander throws instead of printing.
  const json = wantsJson(argv);
  if (json) program.exitOverride().configureOutput({ outputError: () => {} });

  try {
    for (const [, load] of owner ? [owner] : AREAS) (await load()).register(program);
    await program.parseAsync(argv);
  } catch (e) {
    // A CommanderError (thrown only with --json) carries its exit code: 0 after --help or --version.
    if (!(e instanceof CommanderError)) process.exitCode = reportError(e, json);
    else {
      if (e.exitCode !== 0) reportError(e, json);
      process.exitCode = e.exitCode;
    }
  }
}
