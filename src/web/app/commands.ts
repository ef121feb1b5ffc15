/**
 * The stowctl command equivalent to each dashboard action, shown beside it so what is clicked here can
 * be scripted. One place spells them, following the README's stowctl table.
 */

/** Quotes an argument for a POSIX shell when it needs it. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

function cmd(...args: string[]): string {
  return ['stowctl', ...args.map(shellQuote)].join(' ');
}

export const stowctl = {
  machineList: () => cmd('machine', 'list'),
  imageStatus: () => cmd('image', 'status'),
  distribute: (digest: string, from: string, to: string[], platform?: string) =>
    cmd('image', 'distribute', '--digest', digest, '--from', from, '--to', to.join(','), ...(platform ? ['--platform', platform] : [])),
  operationList: () => cmd('image', 'operation', 'list'),
  operationGet: (id: string) => cmd('image', 'operation', 'get', id),
  operationCancel: (id: string) => cmd('image', 'operation', 'cancel', id),
  taskWatch: (id: string) => cmd('task', 'watch', id),
  catalogList: () => cmd('catalog', 'ls'),
  rescan: (registry: string) => cmd('catalog', 'rescan', registry),
  preload: (reference: string, selector: string) => cmd('catalog', 'preload', reference, '--agents', selector),
  unload: (reference: string, selector: string) => cmd('catalog', 'unload', reference, '--agents', selector),
};
