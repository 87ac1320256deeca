// Owns status conditions: pure updates that keep lastTransitionTime unless the status flips.

export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export type ConditionInput = Omit<Condition, 'lastTransitionTime'>;

/**
 * Returns the conditions with `next` applied. The transition time moves only when the status
 * changes, so a status that is recomputed every pass stays byte-identical while nothing changes.
 */
export function setCondition(conditions: readonly Condition[], next: ConditionInput, now: Date): Condition[] {
  const existing = conditions.find((c) => c.type === next.type);
  const lastTransitionTime =
    existing && existing.status === next.status ? existing.lastTransitionTime : rfc3339(now);
  const updated: Condition = { ...next, lastTransitionTime };
  const rest = conditions.filter((c) => c.type !== next.type);
  return [...rest, updated].sort((a, b) => a.type.localeCompare(b.type));
}

export function getCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

/** Kubernetes metav1.Time: RFC 3339 with whole seconds. */
export function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
