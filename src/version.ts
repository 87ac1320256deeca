// Owns where keyroll is installed and the version string reported by the CLI and the controller.
// Both hold for the sources (src/version.ts) and for the bundle (dist/keyroll.js): each sits one
// folder below the package root.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The folder that holds keyroll's package.json (and `.cache/` for the pinned OpenClaw). */
export const PACKAGE_ROOT: string = fileURLToPath(new URL('..', import.meta.url));

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

export const VERSION: string = pkg.version;
