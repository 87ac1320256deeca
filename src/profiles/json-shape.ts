// Owns the wording of shape problems in the JSON documents keyroll reads by hand (auth-profile
// stores, openclaw.json): a field path and what was expected, never a value. The wording is
// zod's, which these checks replaced on the in-pod controller's path (it has no memory for zod).

export interface Issue {
  /** Field names and map keys from the document's root. */
  path: readonly string[];
  message: string;
}

export type Issues = Issue[];

/** The JSON type of a value, as the messages name it. */
function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** `Invalid input: expected <type>, received <its type>` at `path`. */
export function typeIssue(path: readonly string[], expected: string, value: unknown): Issue {
  return { path, message: `Invalid input: expected ${expected}, received ${jsonType(value)}` };
}

/** The first `max` issues, `a.b: message; c: message`. */
export function issuesText(issues: Issues, max: number): string {
  return issues
    .slice(0, max)
    .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}
