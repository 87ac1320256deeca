// Owns the process entry of the CLI: run `main` on this process's arguments and set the exit code.
// `bin/keyroll.mjs` imports it from the sources; `npm run build` bundles it into `dist/keyroll.js`.
import { main } from './main.ts';

process.exitCode = await main(process.argv.slice(2));
