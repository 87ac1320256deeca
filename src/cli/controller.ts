// Owns `keyroll controller`: parse the config, start the controller, stop it on SIGTERM/SIGINT.
import { CONTROLLER_USAGE, HelpRequested, parseControllerConfig } from '../controller/config.ts';
import { startController } from '../controller/controller.ts';
import { EnvStore } from '../controller/env-store.ts';
import { CONTROLLER_ONLY_VARS } from '../controller/openclaw-cli.ts';
import { configPath, FILE_PROVIDER_ALIAS } from '../controller/openclaw-config.ts';
import { createProfilePort } from '../controller/profiles-adapter.ts';
import { EXIT_OK } from '../errors.ts';
import { type CommandContext, commandContext } from './shell.ts';
import type { Io } from './usage.ts';

export async function run(argv: string[], io: Io): Promise<number> {
  // Logs go to stdout (the container's log); the controller prints no report, so no -o.
  const ctx = commandContext(argv, io, {
    name: 'controller',
    usage: CONTROLLER_USAGE,
    output: false,
    logLevel: 'info',
    logTo: 'stdout',
  });
  try {
    if (ctx.help) return EXIT_OK;
    return await serve(ctx, argv, io.env);
  } finally {
    ctx.dispose();
  }
}

async function serve(ctx: CommandContext, argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  let config: ReturnType<typeof parseControllerConfig>;
  try {
    config = parseControllerConfig(argv, env, undefined, ctx.stderr);
  } catch (err) {
    if (err instanceof HelpRequested) return EXIT_OK;
    throw err;
  }
  // The controller token lives in this process's memory only: not in its env from here on (nothing
  // spawned later can inherit it by accident), never in a child's (openclawEnv).
  for (const name of CONTROLLER_ONLY_VARS) delete env[name];
  const { secrets, log } = ctx;
  for (const t of [config.token, config.previousToken, config.gatewayToken]) secrets.add(t);
  const keyVar = config.patchable[0]!;
  const gatewayEnv = new EnvStore(env);
  const controller = await startController({
    config,
    env: gatewayEnv,
    log,
    secrets,
    profiles: createProfilePort({
      stateDir: config.stateDir,
      // The file the gateway reads, as the controller's own config edits find it (controller.ts).
      configPath: () => configPath(config.stateDir, gatewayEnv.snapshot()),
      provider: config.provider,
      target:
        config.delivery === 'file'
          ? { to: 'file', keyFile: config.keyFile!, providerAlias: FILE_PROVIDER_ALIAS }
          : { to: 'env', envVar: keyVar },
      log: log.child({ component: 'profiles' }),
      purgePlaintextBackups: config.purgePlaintextBackups,
    }),
  });

  // Backstop for an exit we did not plan (an uncaught error): the gateway's group goes with us.
  process.on('exit', () => controller.supervisor.killNow());
  return ctx.untilSignalled(() => controller.shutdown());
}
