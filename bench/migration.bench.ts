// Benchmarks the profile migration over 1,000 agents of mixed layouts: cold migrate, then the idempotent re-run.
// Run: node_modules/.bin/node bench/migration.bench.ts [--agents N] [--json]
import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { migrateProfiles } from '../src/profiles/index.ts';
import {
  aliasStore,
  flatStore,
  makeStateDir,
  versionedStore,
  writeAgentDb,
  writeJsonStore,
  writeOpenclawJson,
} from '../test/fixtures/profiles/generate.ts';

const { values } = parseArgs({
  options: { agents: { type: 'string', default: '1000' }, json: { type: 'boolean' } },
});
const agents = Number(values.agents);
if (!Number.isInteger(agents) || agents < 1) throw new Error('--agents must be a positive integer');

let peakRss = process.memoryUsage().rss;
const sampler = setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}, 5);

const dir = makeStateDir('keyroll-bench-');
try {
  // Half JSON (the three legacy shapes in turn), half 2026.6.x agent databases.
  const setupStart = performance.now();
  writeOpenclawJson(dir);
  const shapes = [versionedStore, flatStore, aliasStore];
  for (let i = 0; i < agents; i++) {
    const id = `agent-${String(i).padStart(4, '0')}`;
    if (i % 2 === 0) writeJsonStore(dir, id, shapes[(i / 2) % 3]!());
    else writeAgentDb(dir, id, versionedStore());
  }
  const setupMs = performance.now() - setupStart;
  const target = { to: 'env', envVar: 'KILOCODE_API_KEY' } as const;

  const t0 = performance.now();
  const cold = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target });
  const coldMs = performance.now() - t0;
  const t1 = performance.now();
  const rerun = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target });
  const rerunMs = performance.now() - t1;
  peakRss = Math.max(peakRss, process.memoryUsage().rss);

  if (
    cold.storesFailed ||
    rerun.storesFailed ||
    cold.profilesMigrated !== agents ||
    rerun.profilesMigrated !== 0
  ) {
    throw new Error('benchmark run did not migrate as expected');
  }
  const figures = {
    agents,
    stores: cold.stores.length,
    layouts: { json: Math.ceil(agents / 2), 'sqlite-agent': Math.floor(agents / 2) },
    setupMs: Math.round(setupMs),
    cold: {
      totalMs: Math.round(coldMs),
      perStoreMs: +(coldMs / cold.stores.length).toFixed(3),
      migrated: cold.profilesMigrated,
    },
    rerun: {
      totalMs: Math.round(rerunMs),
      perStoreMs: +(rerunMs / rerun.stores.length).toFixed(3),
      changed: rerun.stores.filter((s) => s.changed).length,
    },
    peakRssMb: +(peakRss / 1024 / 1024).toFixed(1),
    node: process.version,
  };
  if (values.json) console.log(JSON.stringify(figures));
  else {
    console.log(
      `profile migration, ${agents} agents (${figures.layouts.json} JSON + ${figures.layouts['sqlite-agent']} sqlite-agent), ${process.version}`,
    );
    console.log(
      `  cold migrate   ${figures.cold.totalMs} ms total, ${figures.cold.perStoreMs} ms/store, ${figures.cold.migrated} profiles migrated`,
    );
    console.log(
      `  idempotent re-run  ${figures.rerun.totalMs} ms total, ${figures.rerun.perStoreMs} ms/store, ${figures.rerun.changed} stores written`,
    );
    console.log(
      `  peak RSS       ${figures.peakRssMb} MB   (fixture setup ${figures.setupMs} ms, not timed)`,
    );
  }
} finally {
  clearInterval(sampler);
  rmSync(dir, { recursive: true, force: true });
}
