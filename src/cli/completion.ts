import type { Command, Option } from 'commander';

/**
 * `stowctl completion bash|zsh`: a completion script generated from the command tree itself, so it
 * never falls behind. It completes command words and each command's flags; machine IDs and images are
 * the cluster's to know, so they are left to the shell's default.
 */

interface Node {
  path: string;
  words: string[];
  flags: string[];
}

function flagsOf(options: readonly Option[]): string[] {
  return options.flatMap((o) => [o.long, o.short].filter((f): f is string => !!f));
}

function walk(cmd: Command, path: string[], globals: string[], out: Node[]): void {
  out.push({
    path: path.join(' '),
    words: cmd.commands.flatMap((c) => [c.name(), ...c.aliases()]).filter((w) => w !== 'help'),
    flags: [...new Set([...flagsOf(cmd.options), ...globals, '--help'])],
  });
  for (const sub of cmd.commands) {
    for (const name of [sub.name(), ...sub.aliases()]) walk(sub, [...path, name], globals, out);
  }
}

function nodes(program: Command): Node[] {
  const out: Node[] = [];
  walk(program, [], flagsOf(program.options), out);
  return out;
}

/** Options whose value is the next word (it is skipped when finding the command path). */
function valueFlags(program: Command): string[] {
  const all: Option[] = [];
  const collect = (c: Command): void => {
    all.push(...c.options);
    c.commands.forEach(collect);
  };
  collect(program);
  return [...new Set(all.filter((o) => o.required || o.optional).flatMap((o) => [o.long, o.short].filter((f): f is string => !!f)))];
}

export function bashCompletion(program: Command): string {
  const cases = nodes(program)
    .map((n) => `    "${n.path}") words="${n.words.join(' ')}"; flags="${n.flags.join(' ')}" ;;`)
    .join('\n');
  return `# stowctl completion for bash: source <(stowctl completion bash)
_stowctl() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" skip=0 w i
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    if ((skip)); then skip=0; continue; fi
    case "$w" in
      ${valueFlags(program).join('|')}) skip=1 ;;
      -*) ;;
      *) if [[ -n "$(_stowctl_node "\${path:+$path }$w")" ]]; then path="\${path:+$path }$w"; fi ;;
    esac
  done
  local words flags
  eval "$(_stowctl_node "$path")"
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
  fi
}
_stowctl_node() {
  local words flags
  case "$1" in
${cases}
    *) return ;;
  esac
  printf 'words=%q; flags=%q\\n' "$words" "$flags"
}
complete -o default -F _stowctl stowctl
`;
}

export function zshCompletion(program: Command): string {
  return `#compdef stowctl
# stowctl completion for zsh: source <(stowctl completion zsh), or save as _stowctl on $fpath
autoload -U +X bashcompinit && bashcompinit
${bashCompletion(program)}`;
}
