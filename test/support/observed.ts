// Owns reading a `/_kilo/state` answer in tests: the contract's check, failing the test with the
// fields at fault when the answer does not fit.
import { type ObservedState, parseObservedState } from '../../src/kilo-state.ts';

export function observedOrThrow(body: unknown): ObservedState {
  const parsed = parseObservedState(body);
  if (!parsed.ok) throw new Error(`/_kilo/state answer refused (fields: ${parsed.fields.join(', ')})`);
  return parsed.state;
}
