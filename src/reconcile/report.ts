// Owns rendering a pass for people and programs: the diff report, the reconcile table, JSON.

import { formatDuration } from '../duration.ts';
import type { PassResult } from '../engine/pass.ts';
import type { TargetResult } from '../engine/target.ts';
import { type ObservedState, type ObservedTraffic, requiredForm } from '../kilo-state.ts';
import { type Desired, desiredFingerprint, fingerprintLabel, shortHash } from './desired.ts';
import { type Action, needsPatch } from './plan.ts';
import { keyRejection, observedFingerprint } from './status.ts';

const COL = 10;

function line(mark: ' ' | '-' | '+' | '!', field: string, value: string): string {
  return `${mark} ${field.padEnd(COL)} ${value}`.trimEnd();
}

function gatewayText(o: ObservedState): string {
  const parts = [o.gateway.state, o.gateway.ready ? 'ready' : 'not ready'];
  if (o.gateway.pid != null) parts.push(`pid ${o.gateway.pid}`);
  if (o.gateway.restarts != null) parts.push(`restarts ${o.gateway.restarts}`);
  return parts.join(', ');
}

function fingerprintText(hash: string | null | undefined, version: string | null | undefined): string {
  return `${shortHash(hash)}  version ${version ?? '-'}`;
}

function trafficText(t: ObservedTraffic): string {
  const last = (at: string | null | undefined) => (at ? ` (last ${at})` : '');
  return (
    `${t.responses ?? '-'} responses since ${t.since ?? '-'}: ` +
    `${t.accepted ?? '-'} accepted${last(t.lastAcceptedAt)}, ` +
    `${t.keyRejected ?? 0} key rejected${last(t.lastKeyRejectedAt)}`
  );
}

function actionText(a: Action): string {
  return `${a.type}: ${a.code ? `${a.code}: ` : ''}${a.reason}`;
}

/** "KeyRejected: " before a message when the result has a reason code. */
function withReason(r: TargetResult): string {
  return r.reason ? `${r.reason}: ${r.message}` : r.message;
}

/** Unified-diff-like block for one target: ` ` same, `-` observed, `+` desired, `!` cannot observe. */
export function renderTargetDiff(r: TargetResult): string {
  const d: Desired = r.desired;
  const out = [
    `--- observed ${r.name} ${r.url}`,
    `+++ desired  ${r.name} (key version ${d.version}, delivery ${d.delivery})`,
  ];
  const o = r.before;
  if (!o) {
    out.push(line('!', 'error', r.message));
    return `${out.join('\n')}\n`;
  }
  const label = fingerprintLabel(d.delivery);
  out.push(
    line(
      ' ',
      'controller',
      `${o.controller.state}, delivery ${o.controller.delivery ?? '-'}, version ${o.controller.version ?? '-'}`,
    ),
  );
  const have = observedFingerprint(d, o);
  const want = desiredFingerprint(d);
  if (have === want) {
    out.push(line(' ', label, fingerprintText(have, o.key.version)));
  } else {
    out.push(line('-', label, fingerprintText(have, o.key.version)));
    out.push(line('+', label, fingerprintText(want, d.version)));
  }
  const restarts = d.delivery === 'restart' && needsPatch(r.actions);
  const ready = o.gateway.state === 'running' && o.gateway.ready === true;
  if (!restarts && ready) {
    out.push(line(' ', 'gateway', gatewayText(o)));
  } else {
    out.push(line('-', 'gateway', gatewayText(o)));
    out.push(
      line(
        '+',
        'gateway',
        restarts && o.gateway.pid != null
          ? `running, ready, new pid (not ${o.gateway.pid})`
          : 'running, ready',
      ),
    );
  }
  // Only controllers that proxy the gateway report traffic; without it there is no line at all.
  if (o.traffic) {
    if (keyRejection(o)) {
      out.push(line('-', 'traffic', trafficText(o.traffic)));
      // A rejected old key is fixed by the delivery, after which the controller counts afresh.
      out.push(
        line(
          '+',
          'traffic',
          have === want
            ? 'an accepted response after the last key rejection'
            : 'counted afresh after the delivery',
        ),
      );
    } else {
      out.push(line(' ', 'traffic', trafficText(o.traffic)));
    }
  }
  const form = requiredForm(d.delivery);
  if (o.profiles.length === 0) out.push(line(' ', 'profiles', '(none listed)'));
  for (const p of o.profiles) {
    const id = `${p.agentId}/${p.profileId}${p.store ? ` [${p.store}]` : ''}`;
    if (p.form === form) {
      out.push(line(' ', 'profile', `${id} ${p.form}`));
    } else {
      out.push(line('-', 'profile', `${id} ${p.form}`));
      out.push(line('+', 'profile', `${id} ${form}`));
    }
  }
  for (const a of r.actions) out.push(line(' ', 'plan', actionText(a)));
  return `${out.join('\n')}\n`;
}

function keyRejectedCount(p: PassResult): number {
  return p.targets.filter((r) => r.reason === 'KeyRejected').length;
}

function diffSummary(p: PassResult): string {
  const s = p.summary;
  const parts = [`${s.converged} in sync`, `${s.drift} drift`];
  if (s.unreachable) parts.push(`${s.unreachable} unreachable`);
  if (s.notConverged) parts.push(`${s.notConverged} not converged`);
  const rejected = keyRejectedCount(p);
  if (rejected) parts.push(`${rejected} key rejected`);
  return `${s.total} target(s): ${parts.join(', ')} (desired key version ${p.keyVersion}, delivery ${p.delivery})`;
}

export function renderDiff(p: PassResult): string {
  return `${p.targets.map(renderTargetDiff).join('\n')}\n${diffSummary(p)}\n`;
}

function arrow(before: string, after: string): string {
  return before === after ? before : `${before} → ${after}`;
}

/** One row's cells: target, result, pid, fingerprint, actions, time. */
function row(r: TargetResult): string[] {
  const b = r.before;
  const a = r.after;
  const pid = arrow(String(b?.gateway.pid ?? '-'), String(a?.gateway.pid ?? b?.gateway.pid ?? '-'));
  const fp = arrow(
    shortHash(b ? observedFingerprint(r.desired, b) : null),
    shortHash(a ? observedFingerprint(r.desired, a) : b ? observedFingerprint(r.desired, b) : null),
  );
  const acts = r.actions
    .map((x) => x.type)
    .filter((x) => x !== 'none')
    .join(',');
  return [r.name, r.outcome, pid, fp, acts || 'none', formatDuration(r.durationMs)];
}

export function renderTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [fmt(headers), ...rows.map(fmt)].join('\n') + '\n';
}

/** The reconcile report: a table with the proof per target, reasons for anything not done, a summary. */
export function renderReconcile(p: PassResult): string {
  const label = fingerprintLabel(p.delivery).toUpperCase();
  let out = renderTable(['TARGET', 'RESULT', 'PID', label, 'ACTIONS', 'TIME'], p.targets.map(row));
  const notes = p.targets.filter((r) => r.outcome !== 'converged');
  if (notes.length > 0) {
    out += '\n';
    for (const r of notes) out += `${r.name}: ${r.outcome}: ${withReason(r)}\n`;
  }
  const s = p.summary;
  const head = p.paused ? 'rollout paused, nothing sent: ' : '';
  out +=
    `\n${head}${s.converged}/${s.total} converged (${s.patched} patched this pass)` +
    `, ${s.notConverged} not converged, ${s.unreachable} unreachable, ${s.skipped} skipped` +
    (s.drift ? `, ${s.drift} with drift` : '') +
    (keyRejectedCount(p) ? `, ${keyRejectedCount(p)} key rejected` : '') +
    ` — key version ${p.keyVersion}, delivery ${p.delivery}, ${formatDuration(p.durationMs)}\n`;
  return out;
}

/** One plain line per finished target, for logs and non-TTY progress. */
export function renderResultLine(r: TargetResult): string {
  const [, outcome, pid, fp, acts, time] = row(r);
  const why = r.outcome === 'converged' ? '' : `: ${withReason(r)}`;
  return `${r.name}: ${outcome} pid ${pid} ${fingerprintLabel(r.desired.delivery)} ${fp} [${acts}] ${time}${why}\n`;
}

/** JSON for programs: the whole pass, fingerprints only (the key never enters a result). */
/** The pass as JSON; `extra` adds top-level fields (the key lifecycle). */
export function renderJson(p: PassResult, extra: Record<string, unknown> = {}): string {
  return `${JSON.stringify({ ...p, ...extra }, null, 2)}\n`;
}
