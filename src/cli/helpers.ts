/**
 * What cli/index.ts hands to each command-group module (passed in, so those modules never import index.ts and
 * no import cycle forms): the az-style action wrapper, output, a connected client, the subscription, tag parsing.
 */
import type { Command } from 'commander';
import type { RsvaultClient } from '../client/index.js';
import type { Profile } from './profile.js';

export interface CliHelpers {
  action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void>;
  out(data: unknown, cmd: Command): void;
  withClient<T>(fn: (c: RsvaultClient, p: Profile) => Promise<T>): Promise<T>;
  sub(p: Profile, cmd: Command): string;
  parseTags(tags: string[] | undefined): Record<string, string> | undefined;
  usageError(message: string): Error;
}
