import type { CommandContext } from '../context.js';

/**
 * A command's body: gets the context, its own options and its positional arguments; returns the exit
 * code (undefined = 0). Errors thrown are reported by main().
 */
export type Action = (ctx: CommandContext, opts: Record<string, unknown>, args: string[]) => Promise<number | void>;

/** Turns an Action into a commander action handler (main.ts supplies it). */
export type Bind = (fn: Action) => (...commanderArgs: unknown[]) => Promise<void>;
