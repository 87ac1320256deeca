import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/cli/usage.ts';
import { parseControllerConfig } from '../../src/controller/config.ts';

const env = { HOME: '/home/x', KEYROLL_CONTROLLER_TOKEN: 'controller-token-0123456789' };

describe('--surge-yield: how the old gateway yields the CPU while a surge starts', () => {
  it('defaults to autogroup (threads and the autogroup); threads and off are accepted', () => {
    expect(parseControllerConfig([], env).surgeYield).toBe('autogroup');
    expect(parseControllerConfig(['--surge-yield', 'threads'], env).surgeYield).toBe('threads');
    expect(parseControllerConfig(['--surge-yield=off'], env).surgeYield).toBe('off');
  });

  it('anything else is a usage error naming the choices', () => {
    const bad = () => parseControllerConfig(['--surge-yield', 'nice'], env);
    expect(bad).toThrow(UsageError);
    expect(bad).toThrow('--surge-yield must be autogroup, threads or off');
  });
});
