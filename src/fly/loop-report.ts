// Owns rendering a Fly pass for people and programs: the per-machine table (durable and live side
// by side), the dry-run diff, and JSON. Fingerprints only; the key never enters a result.

import { formatDuration } from '../duration.ts';
import { shortHash } from '../fingerprint.ts';
import { renderTable, renderTargetDiff } from '../reconcile/report.ts';
import type { FlyPassResult, MachineResult } from './loop.ts';

function durableCell(m: MachineResult): string {
  return `${m.durable} ${shortHash(m.durableHash)}`;
}

function liveCell(m: MachineResult): string {
  const o = m.delivered?.after ?? m.observed?.before ?? null;
  const pid = o?.gateway.pid != null ? ` pid ${o.gateway.pid}` : '';
  return `${m.live}${pid}`;
}

function actionCell(m: MachineResult, dryRun: boolean): string {
  if (dryRun) return m.planned === 'none' ? (m.held ? 'held' : '-') : `would ${m.planned}`;
  if (m.action === 'none') return m.held ? 'held' : '-';
  return m.changed ? m.action : `${m.action} (failed)`;
}

function head(p: FlyPassResult): string {
  return `app ${p.app}: key version ${p.keyVersion}, desired ${p.envVar} ${shortHash(p.desiredHash)}, delivery ${p.delivery}`;
}

function summaryLine(p: FlyPassResult): string {
  const s = p.summary;
  if (p.status === 'deploying') {
    return `app is mid-deploy (${p.deploy.reasons.join('; ')}): pass skipped, nothing read from controllers or written\n`;
  }
  const parts = [
    `${s.converged}/${s.total} converged`,
    p.dryRun ? null : `${s.liveDelivered} live delivered`,
    p.dryRun ? null : `${s.durableWritten} config written`,
    s.notConverged ? `${s.notConverged} not converged` : null,
    s.skipped ? `${s.skipped} skipped` : null,
    s.held ? `${s.held} held by --max-changes ${p.maxChanges}` : null,
    s.deferred ? `${s.deferred} config write deferred (machine running)` : null,
  ].filter((x): x is string => x !== null);
  const tail = p.status === 'deadline' ? ' — pass deadline reached' : '';
  return `${p.dryRun ? 'dry run, nothing written: ' : ''}${parts.join(', ')}${tail} — ${formatDuration(p.durationMs)}\n`;
}

/** The per-machine table, reasons for every machine not converged, and a summary line. */
export function renderFlyPass(p: FlyPassResult): string {
  let out = `${head(p)}\n`;
  out += renderTable(
    ['MACHINE', 'STATE', 'DURABLE', 'LIVE', 'ACTION', 'RESULT'],
    p.machines.map((m) => [m.id, m.state, durableCell(m), liveCell(m), actionCell(m, p.dryRun), m.outcome]),
  );
  const notes = p.machines.filter((m) => m.outcome !== 'converged' || m.durable === 'deferred' || m.held);
  if (notes.length > 0) {
    out += '\n';
    for (const m of notes) out += `${m.id}: ${m.outcome}: ${m.message}\n`;
  }
  return `${out}\n${summaryLine(p)}`;
}

/** Dry run: the table, then the controller diff of every observed machine, then config diffs. */
export function renderFlyDiff(p: FlyPassResult): string {
  let out = renderFlyPass(p);
  const observed = p.machines.filter((m) => m.observed);
  if (observed.length > 0) out += `\n${observed.map((m) => renderTargetDiff(m.observed!)).join('\n')}`;
  const configs = p.machines.filter((m) => m.durable !== 'ok');
  if (configs.length > 0) {
    out += '\n';
    for (const m of configs) {
      out += `--- config ${m.id} (${m.state}) env ${p.envVar} ${shortHash(m.durableHash)}\n`;
      out += `+++ desired                ${p.envVar} ${shortHash(p.desiredHash)}\n`;
      out += `  plan ${m.planned === 'durable' ? 'write with skip_launch under the machine lease' : m.durable === 'deferred' ? 'deferred: the machine is running and a config write would restart it' : 'none this pass'}\n`;
    }
  }
  return out;
}

/** JSON for programs (with the app's key lifecycle when it is on). */
export function renderFlyJson(p: FlyPassResult & { lifecycle?: unknown }): string {
  return `${JSON.stringify(p, null, 2)}\n`;
}
