import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, readFile } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { join, posix } from 'node:path';
import { gunzipSync, constants as zlibConstants } from 'node:zlib';
import { StowageError } from '../../errors.js';
import { type Digest, digestOf, shortId } from '../../oci/digest.js';
import { setEnv } from '../changes.js';
import type { FetchedUrl } from '../fetch-policy.js';
import { type NewImageRecord, writeImage } from '../store-image.js';
import { type Descriptor, type ImageConfig, canonicalJson } from '../../oci/manifest.js';
import { MediaType } from '../../oci/media-types.js';
import { type Platform, parsePlatform } from '../../oci/platform.js';
import type { ContentStoreApi, ImageIndexApi, Lease } from '../../store/types.js';
import { type Dockerfile, type Instruction, type Stage, parseDockerfile, splitStages } from './dockerfile.js';
import {
  type Identity,
  buildError,
  checkSignal,
  formatDuration,
  goQuoteList,
  parseChown,
  parseDuration,
  parsePorts,
} from './instructions.js';
import { type LayerEntry, writeLayer } from './layer.js';
import { type CacheSource, type CachedStep, type StepLookup, matchCacheSource } from './step-cache.js';
import { cleanInRoot, escapesRoot, hasWildcards, joinRel, matchSegment } from './paths.js';
import { expandWord, expandWords } from './shell-lex.js';
import { FileTree, type NodeMeta, extractInto } from './tree.js';

/** An image a stage starts from or copies from. */
export interface BaseImage {
  id: Digest;
  manifestDigest: Digest;
  manifestMediaType: string;
  config: ImageConfig;
  layers: Descriptor[];
}

/** Where build output goes: classic-builder "stream" lines and raw JSON messages (pull progress). */
export interface BuildOutput {
  stream(text: string): void;
  message(obj: Record<string, unknown>): void;
}

export interface BuildRequest {
  dockerfile: Dockerfile;
  dockerfileName: string;
  context: FileTree;
  buildArgs: Record<string, string | null>;
  labels: Record<string, string>;
  target: string | undefined;
  quiet: boolean;
  pull: boolean;
  platform: Platform | undefined;
  /** nocache: run every step, reusing nothing. */
  noCache: boolean;
  /** `--cache-from` images (local), trusted as cache sources besides the local step cache. */
  cacheFrom: CacheSource[];
}

export interface BuildDeps {
  store: ContentStoreApi;
  images: ImageIndexApi;
  /**
   * Held by the caller until the built image is recorded: resolveImage adds the blobs of the images it hands
   * out (when it reads their records), the builder adds every layer, config and manifest it writes.
   */
  lease: Lease;
  /** A directory private to this build (stage file systems are unpacked here). */
  workDir: string;
  /** Finds an image locally, pulling it when missing (or always with pull); adds its blobs to `lease`. */
  resolveImage(name: string, opts: { pull: boolean; platform: Platform | undefined }): Promise<BaseImage>;
  out: BuildOutput;
  signal?: AbortSignal | undefined;
  /** The host platform for FROM scratch. */
  defaultPlatform: Platform;
  /** ADD <url>: fetches under the engine's fetch policy; without it, URLs are refused. */
  download?: ((url: string, signal?: AbortSignal) => Promise<FetchedUrl>) | undefined;
  /** Steps earlier builds made (the build-cache ledger). */
  stepCache?: StepLookup | undefined;
}

/** One step's image, for the build-cache ledger (its blobs are stored and held by the build's lease). */
export interface StepImage {
  parent: Digest;
  createdBy: string;
  created: string;
  record: NewImageRecord;
  layer?: { descriptor: Descriptor; diffId: Digest } | undefined;
}

export interface BuildResult {
  /** The built image, its config and manifest stored, not yet recorded (the image ID is its configDigest). */
  record: NewImageRecord;
  /** Layers written by stages that are not the result (build cache). */
  intermediateBlobs: Array<{ digest: Digest; size: number }>;
  unusedBuildArgs: string[];
  /** Every step's image, in order (the last is the result). */
  steps: StepImage[];
}

/** The step being run: the image it starts from, and the cache hit that served it, if any. */
interface PendingStep {
  parent: Digest;
  parentConfig: ImageConfig;
  hit: CachedStep | undefined;
}

const DEFAULT_SHELL = ['/bin/sh', '-c'];
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const BUILTIN_ARGS = new Set([
  'HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'FTP_PROXY', 'ftp_proxy', 'NO_PROXY', 'no_proxy',
  'ALL_PROXY', 'all_proxy',
]);

type Json = Record<string, unknown>;

interface StageState {
  stage: Stage;
  config: ImageConfig;
  container: Json;
  layers: Descriptor[];
  layerMediaType: string;
  manifestMediaType: string;
  args: Map<string, string>;
  shell: string[];
  cmdSet: boolean;
  view: FileTree | undefined;
  newBlobs: Array<{ digest: Digest; size: number }>;
  platform: Platform;
}

function cloneJson<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

function envMap(list: readonly string[] | null | undefined): Map<string, string> {
  const m = new Map<string, string>();
  for (const kv of list ?? []) {
    const eq = kv.indexOf('=');
    if (eq < 0) m.set(kv, '');
    else m.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  return m;
}

export class Builder {
  private readonly metaArgs = new Map<string, string>();
  private readonly usedArgs = new Set<string>();
  private readonly states: StageState[] = [];
  private readonly materialized = new Map<string, Promise<FileTree>>();
  private step = 0;
  private totalSteps = 0;
  private pending: PendingStep | undefined;
  private downloads = 0;
  private readonly steps: StepImage[] = [];

  constructor(
    private readonly req: BuildRequest,
    private readonly deps: BuildDeps,
  ) {}

  private say(text: string): void {
    if (!this.req.quiet) this.deps.out.stream(text);
  }

  private checkAborted(): void {
    if (this.deps.signal?.aborted) throw new StowageError('CONFLICT', 'build cancelled: the client went away');
  }

  async run(): Promise<BuildResult> {
    const { metaArgs, stages: allStages } = splitStages(this.req.dockerfile);
    let stages = allStages;
    if (this.req.target) {
      const t = this.req.target.toLowerCase();
      const ix = stages.findIndex((s) => s.name === t);
      if (ix < 0) throw buildError(`failed to reach build target ${this.req.target} in Dockerfile`);
      stages = stages.slice(0, ix + 1);
    }
    // `--label`s are one more LABEL step of the result, as dockerd's addNodesForLabelOption makes them.
    const labelStep = labelInstruction(this.req.labels);
    if (labelStep && stages.length > 0) {
      const last = stages[stages.length - 1]!;
      stages = [...stages.slice(0, -1), { ...last, instructions: [...last.instructions, labelStep] }];
    }
    this.totalSteps = metaArgs.length + stages.length + stages.reduce((n, s) => n + s.instructions.length, 0);

    for (const ins of metaArgs) {
      this.beginStep(ins);
      this.declareArgs(ins, this.metaArgs, this.metaArgs);
    }
    for (const stage of stages) {
      this.checkAborted();
      const state = await this.from(stage);
      this.states.push(state);
      for (const ins of stage.instructions) {
        this.checkAborted();
        this.beginStep(ins);
        const id = await this.dispatchStep(state, ins);
        this.say(` ---> ${shortId(id)}\n`);
      }
    }
    const last = this.states[this.states.length - 1]!;
    const record = await this.commit(last);
    const intermediateBlobs = this.states.slice(0, -1).flatMap((s) => s.newBlobs);
    const unused = Object.keys(this.req.buildArgs).filter((k) => !this.usedArgs.has(k) && !BUILTIN_ARGS.has(k)).sort();
    return { record, intermediateBlobs, unusedBuildArgs: unused, steps: this.steps };
  }

  /**
   * Runs one instruction as a step of its own: looks it up in the cache (a layer step before writing its
   * layer, in commitLayer; a metadata step once its command is known), then stores the step's image, whose
   * ID is what the build prints after the step.
   */
  private async dispatchStep(state: StageState, ins: Instruction): Promise<Digest> {
    const parentConfig = this.finalConfig(state);
    const parent = digestOf(canonicalJson(parentConfig));
    const pending: PendingStep = { parent, parentConfig, hit: undefined };
    this.pending = pending;
    const before = state.config.history?.length ?? 0;
    try {
      await this.dispatch(state, ins);
    } finally {
      this.pending = undefined;
    }
    const entry = state.config.history?.[before];
    if (!entry) return parent;
    if (entry.empty_layer && entry.created_by !== undefined) {
      pending.hit = await this.cached(pending, entry.created_by, false);
      if (pending.hit) entry.created = pending.hit.created;
    }
    state.config.created = entry.created;
    if (pending.hit) this.say(' ---> Using cache\n');
    const record = await this.writeStage(state);
    const layer = entry.empty_layer ? undefined : { descriptor: state.layers[state.layers.length - 1]!, diffId: state.config.rootfs.diff_ids[state.config.rootfs.diff_ids.length - 1]! };
    this.steps.push({ parent, createdBy: entry.created_by ?? '', created: entry.created ?? '', record, layer });
    return record.configDigest;
  }

  /** The cached result of a step, from the local cache or a `--cache-from` image, when its layer is still here. */
  private async cached(pending: PendingStep, createdBy: string, withLayer: boolean): Promise<CachedStep | undefined> {
    if (this.req.noCache) return undefined;
    const candidates = [this.deps.stepCache?.lookup(pending.parent, createdBy), ...this.req.cacheFrom.map((src) => matchCacheSource(src, pending.parentConfig, createdBy))];
    for (const hit of candidates) {
      if (!hit || (hit.layer !== undefined) !== withLayer) continue;
      if (hit.layer) {
        // Held from here on, like the layers this build writes.
        this.deps.lease.add(hit.layer.descriptor.digest);
        if (!(await this.deps.store.has(hit.layer.descriptor.digest))) continue;
      }
      return hit;
    }
    return undefined;
  }

  private beginStep(ins: Instruction): void {
    this.step++;
    this.say(`Step ${this.step}/${this.totalSteps} : ${ins.original}\n`);
  }

  // ---- FROM ----------------------------------------------------------------------------------------

  private async from(stage: Stage): Promise<StageState> {
    this.beginStep(stage.from);
    const ins = stage.from;
    const rawName = ins.args[0] ?? '';
    const name = expandWord(rawName, this.metaArgs);
    for (const k of this.metaArgs.keys()) if (rawName.includes(k)) this.usedArgs.add(k);
    if (name === '') throw buildError(`base name (${rawName}) should not be blank`);
    const platformFlag = ins.flags.find((f) => f.name === 'platform');
    for (const f of ins.flags) if (f.name !== 'platform') throw buildError(`Unknown flag: ${f.name}`);
    let platform = this.req.platform;
    if (platformFlag?.value) {
      platform = parsePlatform(expandWord(platformFlag.value, this.metaArgs));
    }

    let state: StageState;
    const byStage = this.states.find((s) => s.stage.name !== undefined && s.stage.name === name.toLowerCase());
    if (name.toLowerCase() === 'scratch') {
      const p = platform ?? this.deps.defaultPlatform;
      const config: ImageConfig = {
        architecture: p.architecture,
        os: p.os,
        ...(p.variant ? { variant: p.variant } : {}),
        config: {},
        rootfs: { type: 'layers', diff_ids: [] },
        history: [],
      };
      state = this.newState(stage, config, [], MediaType.DockerManifest, p);
      this.say(' ---> \n');
    } else if (byStage) {
      // FROM an earlier stage: continue from its state.
      const config = this.finalConfig(byStage);
      state = this.newState(stage, config, [...byStage.layers], byStage.manifestMediaType, byStage.platform);
      state.shell = [...byStage.shell];
      this.say(` ---> ${shortId(digestOf(canonicalJson(this.finalConfig(state))))}\n`);
    } else {
      const base = await this.deps.resolveImage(name, { pull: this.req.pull, platform });
      const config = cloneJson(base.config);
      const p: Platform = { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) };
      state = this.newState(stage, config, base.layers.map((l) => ({ ...l })), base.manifestMediaType, p);
      state.shell = base.config.config?.Shell && base.config.config.Shell.length > 0 ? [...base.config.config.Shell] : [...DEFAULT_SHELL];
      this.say(` ---> ${shortId(base.id)}\n`);
      const triggers = base.config.config?.OnBuild ?? [];
      if (triggers.length > 0) {
        state.container['OnBuild'] = null;
        this.say(`# Executing ${triggers.length} build trigger${triggers.length === 1 ? '' : 's'}\n`);
        for (const trigger of triggers) {
          const parsed = parseDockerfile(trigger).instructions;
          for (const t of parsed) await this.dispatchStep(state, t);
        }
      }
    }
    // Docker adds a default PATH when the base has none.
    const env = (state.container['Env'] as string[] | null | undefined) ?? [];
    if (!env.some((kv) => kv.startsWith('PATH='))) state.container['Env'] = [...env, `PATH=${DEFAULT_PATH}`];
    return state;
  }

  private newState(stage: Stage, config: ImageConfig, layers: Descriptor[], manifestMediaType: string, platform: Platform): StageState {
    const container = (config.config ?? {}) as Json;
    const oci = manifestMediaType === MediaType.OciManifest;
    const history = config.history ?? [];
    // Base history may be shorter than its layers (images made by other tools): keep the layers consistent.
    config.history = history;
    return {
      stage,
      config,
      container,
      layers,
      layerMediaType: oci ? MediaType.OciLayerGzip : MediaType.DockerLayerGzip,
      manifestMediaType: oci ? MediaType.OciManifest : MediaType.DockerManifest,
      args: new Map(),
      shell: [...DEFAULT_SHELL],
      cmdSet: false,
      view: undefined,
      newBlobs: [],
      platform,
    };
  }

  // ---- dispatch -----------------------------------------------------------------------------------

  /** Variables visible to an instruction: declared ARGs, overridden by ENV. */
  private env(state: StageState): Map<string, string> {
    const m = new Map(state.args);
    for (const [k, v] of envMap(state.container['Env'] as string[] | undefined)) m.set(k, v);
    return m;
  }

  private word(state: StageState, w: string): string {
    return expandWord(w, this.env(state), this.req.dockerfile.escape);
  }

  private history(state: StageState, createdBy: string, emptyLayer: boolean): void {
    const entry: Json = { created: new Date().toISOString(), created_by: createdBy };
    if (emptyLayer) entry['empty_layer'] = true;
    state.config.history = [...(state.config.history ?? []), entry];
  }

  /** "/bin/sh -c #(nop)  ENV A=b": the commit comment of a metadata-only step. */
  private nop(state: StageState, comment: string): void {
    this.history(state, `${state.shell.join(' ')} #(nop)  ${comment}`, true);
  }

  private noFlags(ins: Instruction): void {
    const f = ins.flags[0];
    if (f) throw buildError(`Unknown flag: ${f.name}`);
  }

  private async dispatch(state: StageState, ins: Instruction): Promise<void> {
    const c = state.container;
    switch (ins.cmd) {
      case 'run':
        throw buildError(`RUN needs a container runtime: this Stowage agent has none (step: ${ins.original})`);
      case 'arg': {
        this.declareArgs(ins, state.args, this.metaArgs, this.env(state));
        const text = ins.args
          .map((a) => {
            const key = a.split('=', 1)[0]!;
            return a.includes('=') ? `${key}=${state.args.get(key) ?? ''}` : key;
          })
          .join(' ');
        this.nop(state, `ARG ${text}`);
        return;
      }
      case 'env': {
        const env = this.env(state);
        const pairs = (ins.pairs ?? []).map((p) => ({
          key: expandWord(p.key, env, this.req.dockerfile.escape),
          value: expandWord(p.value, env, this.req.dockerfile.escape),
        }));
        let list = [...((c['Env'] as string[] | null | undefined) ?? [])];
        for (const p of pairs) {
          if (p.key === '') throw buildError('ENV names can not be blank');
          list = setEnv(list, p.key, p.value);
        }
        c['Env'] = list;
        this.nop(state, `ENV ${pairs.map((p) => `${p.key}=${p.value}`).join(' ')}`);
        return;
      }
      case 'label': {
        const env = this.env(state);
        const labels = { ...((c['Labels'] as Record<string, string> | null | undefined) ?? {}) };
        const shown: string[] = [];
        for (const p of ins.pairs ?? []) {
          const key = expandWord(p.key, env, this.req.dockerfile.escape);
          const value = expandWord(p.value, env, this.req.dockerfile.escape);
          if (key === '') throw buildError('LABEL names can not be blank');
          labels[key] = value;
          shown.push(`${key}=${value}`);
        }
        c['Labels'] = labels;
        this.nop(state, `LABEL ${shown.join(' ')}`);
        return;
      }
      case 'maintainer': {
        const name = ins.args[0] ?? '';
        if (name === '') throw buildError('MAINTAINER requires exactly one argument');
        state.config.author = name;
        this.nop(state, `MAINTAINER ${name}`);
        return;
      }
      case 'workdir':
        await this.workdir(state, ins);
        return;
      case 'user': {
        const user = this.word(state, ins.args[0] ?? '');
        if (ins.args.length === 0) throw buildError('USER requires exactly one argument');
        c['User'] = user;
        this.nop(state, `USER ${user}`);
        return;
      }
      case 'expose': {
        if (ins.args.length === 0) throw buildError('EXPOSE requires at least one argument');
        const env = this.env(state);
        const words = ins.args.flatMap((a) => expandWords(a, env, this.req.dockerfile.escape));
        const ports = parsePorts(words);
        const exposed = { ...((c['ExposedPorts'] as Record<string, object> | null | undefined) ?? {}) };
        for (const p of ports) exposed[p] = {};
        c['ExposedPorts'] = exposed;
        this.nop(state, `EXPOSE ${Object.keys(exposed).sort().join(' ')}`);
        return;
      }
      case 'volume': {
        if (ins.args.length === 0) throw buildError('VOLUME requires at least one argument');
        const vols = { ...((c['Volumes'] as Record<string, object> | null | undefined) ?? {}) };
        const added: string[] = [];
        for (const a of ins.args) {
          const v = this.word(state, a).trim();
          if (v === '') throw buildError('VOLUME specified can not be an empty string');
          vols[v] = {};
          added.push(v);
        }
        c['Volumes'] = vols;
        this.nop(state, `VOLUME [${added.join(' ')}]`);
        return;
      }
      case 'stopsignal': {
        const sig = this.word(state, ins.args[0] ?? '');
        if (sig === '') throw buildError('STOPSIGNAL requires exactly one argument');
        checkSignal(sig);
        c['StopSignal'] = sig;
        this.nop(state, `STOPSIGNAL ${sig}`);
        return;
      }
      case 'cmd': {
        const cmd = ins.json ? ins.args : [...state.shell, ...ins.args];
        c['Cmd'] = cmd;
        state.cmdSet = true;
        this.nop(state, `CMD ${goQuoteList(cmd)}`);
        return;
      }
      case 'entrypoint': {
        const ep = ins.json ? ins.args : ins.args.length === 0 ? [] : [...state.shell, ...ins.args];
        c['Entrypoint'] = ep;
        // A CMD inherited from the base makes no sense with a new ENTRYPOINT.
        if (!state.cmdSet) c['Cmd'] = null;
        this.nop(state, `ENTRYPOINT ${goQuoteList(ep)}`);
        return;
      }
      case 'shell': {
        if (ins.args.length === 0) throw buildError('SHELL requires at least one argument');
        state.shell = [...ins.args];
        c['Shell'] = [...ins.args];
        this.nop(state, `SHELL [${ins.args.join(' ')}]`);
        return;
      }
      case 'healthcheck':
        this.healthcheck(state, ins);
        return;
      case 'onbuild': {
        const t = ins.trigger!;
        const text = `${t.cmd.toUpperCase()} ${ins.rest.replace(/^\S+\s*/, '')}`.trim();
        c['OnBuild'] = [...((c['OnBuild'] as string[] | null | undefined) ?? []), text];
        this.nop(state, `ONBUILD ${text}`);
        return;
      }
      case 'copy':
      case 'add':
        await this.copy(state, ins);
        return;
      case 'from':
        throw buildError('FROM inside a stage');
    }
  }

  private declareArgs(ins: Instruction, into: Map<string, string>, meta: Map<string, string>, env: Map<string, string> = meta): void {
    if (ins.args.length === 0) throw buildError('ARG requires at least one argument');
    for (const raw of ins.args) {
      const eq = raw.indexOf('=');
      const key = eq < 0 ? raw : raw.slice(0, eq);
      if (key === '') throw buildError('ARG names can not be blank');
      const provided = this.req.buildArgs[key];
      if (provided !== undefined) this.usedArgs.add(key);
      if (provided !== undefined && provided !== null) {
        into.set(key, provided);
      } else if (eq >= 0) {
        into.set(key, expandWord(raw.slice(eq + 1), env, this.req.dockerfile.escape));
      } else if (into !== meta && meta.has(key)) {
        into.set(key, meta.get(key)!);
      }
    }
  }

  private healthcheck(state: StageState, ins: Instruction): void {
    const kind = (ins.args[0] ?? '').toUpperCase();
    const c = state.container;
    if (kind === 'NONE') {
      if (ins.args.length > 1) throw buildError('HEALTHCHECK NONE takes no arguments');
      if (ins.flags.length > 0) throw buildError('HEALTHCHECK NONE takes no flags');
      c['Healthcheck'] = { Test: ['NONE'] };
      this.nop(state, 'HEALTHCHECK &{["NONE"] "0s" "0s" "0s" "0s" \'\\x00\'}');
      return;
    }
    if (kind !== 'CMD') throw buildError(`Unknown type "${kind}" in HEALTHCHECK (try CMD)`);
    const rest = ins.args.slice(1);
    if (rest.length === 0) throw buildError('Missing command after HEALTHCHECK CMD');
    const test = ins.json ? ['CMD', ...rest] : ['CMD-SHELL', rest.join(' ')];
    const hc: Json = { Test: test };
    const durations: Record<string, number> = {};
    for (const f of ins.flags) {
      const value = f.value ?? '';
      switch (f.name) {
        case 'interval':
        case 'timeout':
        case 'start-period':
        case 'start-interval': {
          const ns = parseDuration(value);
          if (ns !== 0 && ns < 1e6) throw buildError(`${f.name === 'start-period' ? 'StartPeriod' : f.name[0]!.toUpperCase() + f.name.slice(1)} "${value}" cannot be less than 1ms`);
          const field = f.name === 'interval' ? 'Interval' : f.name === 'timeout' ? 'Timeout' : f.name === 'start-period' ? 'StartPeriod' : 'StartInterval';
          durations[field] = ns;
          if (ns !== 0) hc[field] = ns;
          break;
        }
        case 'retries': {
          if (!/^-?\d+$/.test(value)) throw buildError(`strconv.ParseInt: parsing "${value}": invalid syntax`);
          const n = Number(value);
          if (n < 0) throw buildError('--retries cannot be negative');
          if (n !== 0) hc['Retries'] = n;
          break;
        }
        default:
          throw buildError(`Unknown flag: ${f.name}`);
      }
    }
    c['Healthcheck'] = hc;
    const retries = (hc['Retries'] as number | undefined) ?? 0;
    const d = (k: string) => JSON.stringify(formatDuration(durations[k] ?? 0));
    this.nop(
      state,
      `HEALTHCHECK &{${goQuoteList(test)} ${d('Interval')} ${d('Timeout')} ${d('StartPeriod')} ${d('StartInterval')} '\\x${retries.toString(16).padStart(2, '0')}'}`,
    );
  }

  // ---- file system ----------------------------------------------------------------------------------

  /** Headers-only view of the stage's root file system (built on first use, then kept up to date). */
  private async view(state: StageState): Promise<FileTree> {
    if (state.view) return state.view;
    const tree = new FileTree(undefined);
    const capture = new Set(['etc/passwd', 'etc/group']);
    const budget = { bytes: 0, entries: 0 };
    for (const layer of state.layers) {
      this.checkAborted();
      await extractInto(tree, await this.deps.store.createReadStream(layer.digest), { whiteouts: true, capture, budget });
    }
    state.view = tree;
    return tree;
  }

  /** A stage's (or image's) root file system unpacked on disk, for COPY --from. */
  private materialize(key: string, layers: Descriptor[]): Promise<FileTree> {
    let p = this.materialized.get(key);
    if (!p) {
      p = (async () => {
        const dir = join(this.deps.workDir, `rootfs-${this.materialized.size}`);
        const tree = new FileTree(dir);
        await mkdir(dir, { recursive: true });
        const budget = { bytes: 0, entries: 0 };
        for (const layer of layers) {
          this.checkAborted();
          await extractInto(tree, await this.deps.store.createReadStream(layer.digest), { whiteouts: true, budget });
        }
        return tree;
      })();
      this.materialized.set(key, p);
    }
    return p;
  }

  private absPath(state: StageState, p: string): string {
    const wd = (state.container['WorkingDir'] as string | undefined) || '/';
    return p.startsWith('/') ? p : posix.join(wd, p) + (p.endsWith('/') && !posix.join(wd, p).endsWith('/') ? '/' : '');
  }

  /** Entries for the parents of `rel` that the layer must carry: existing ones as they are, new ones created. */
  private parentEntries(view: FileTree, rel: string, owner: Identity, entries: Map<string, LayerEntry>): void {
    const parts = rel.split('/').filter((x) => x !== '');
    parts.pop();
    let cur = '';
    for (const part of parts) {
      cur = joinRel(cur, part);
      if (entries.has(cur)) continue;
      const existing = view.get(cur);
      if (existing?.kind === 'directory') {
        entries.set(cur, { path: cur, meta: { ...existing } });
      } else {
        entries.set(cur, { path: cur, meta: { kind: 'directory', mode: 0o755, uid: owner.uid, gid: owner.gid, mtime: new Date(), size: 0 } });
      }
    }
  }

  private async commitLayer(state: StageState, entries: Map<string, LayerEntry>, createdBy: string): Promise<void> {
    const sorted = [...entries.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const hit = this.pending ? await this.cached(this.pending, createdBy, true) : undefined;
    if (hit?.layer) {
      this.pending!.hit = hit;
      state.layers.push({ ...hit.layer.descriptor });
      state.config.rootfs = { ...state.config.rootfs, diff_ids: [...state.config.rootfs.diff_ids, hit.layer.diffId] };
    } else {
      const blob = await writeLayer(this.deps.store, sorted, this.deps.lease);
      state.layers.push({ mediaType: state.layerMediaType, digest: blob.digest, size: blob.size });
      state.config.rootfs = { ...state.config.rootfs, diff_ids: [...state.config.rootfs.diff_ids, blob.diffId] };
      state.newBlobs.push({ digest: blob.digest, size: blob.size });
    }
    this.history(state, createdBy, false);
    if (hit) state.config.history![state.config.history!.length - 1]!.created = hit.created;
    if (state.view) {
      for (const e of sorted) {
        const existing = state.view.get(e.path);
        if (existing && (existing.kind !== 'directory' || e.meta.kind !== 'directory')) await state.view.removeSubtree(e.path);
        await state.view.ensureParents(e.path);
        state.view.nodes.set(e.path, { ...e.meta });
        if ((e.path === 'etc/passwd' || e.path === 'etc/group') && e.source) state.view.captured.set(e.path, await readFile(e.source));
      }
    }
  }

  private async workdir(state: StageState, ins: Instruction): Promise<void> {
    if (ins.args.length === 0) throw buildError('WORKDIR requires exactly one argument');
    const raw = this.word(state, ins.args[0]!);
    const cur = (state.container['WorkingDir'] as string | undefined) || '/';
    const wd = posix.resolve(cur, raw);
    state.container['WorkingDir'] = wd;
    const view = await this.view(state);
    const rel = view.resolve(cleanInRoot(wd));
    const comment = `${state.shell.join(' ')} #(nop) WORKDIR ${wd}`;
    if (rel === '' || view.get(rel)?.kind === 'directory') {
      this.history(state, comment, true);
      return;
    }
    const entries = new Map<string, LayerEntry>();
    const root: Identity = { uid: 0, gid: 0 };
    this.parentEntries(view, rel, root, entries);
    entries.set(rel, { path: rel, meta: { kind: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: new Date(), size: 0 } });
    await this.commitLayer(state, entries, comment);
  }

  private async copy(state: StageState, ins: Instruction): Promise<void> {
    const isAdd = ins.cmd === 'add';
    const name = isAdd ? 'ADD' : 'COPY';
    let fromFlag: string | undefined;
    let chownFlag: string | undefined;
    let chmodFlag: string | undefined;
    for (const f of ins.flags) {
      if (f.name === 'from' && !isAdd) fromFlag = f.value ?? '';
      else if (f.name === 'chown') chownFlag = f.value ?? '';
      else if (f.name === 'chmod') chmodFlag = f.value ?? '';
      else if (f.name === 'link') continue;
      else throw buildError(`Unknown flag: ${f.name}`);
    }
    if (ins.args.length < 2) {
      throw buildError(`${name} requires at least two arguments, but only one was provided. Destination could not be determined.`);
    }
    const env = this.env(state);
    const words = ins.args.map((a) => expandWord(a, env, this.req.dockerfile.escape));
    const destRaw = words[words.length - 1]!;
    const srcs = words.slice(0, -1);

    // Where the files come from.
    let source: FileTree = this.req.context;
    let fromContext = true;
    if (fromFlag !== undefined) {
      const from = this.word(state, fromFlag);
      if (from === '') throw buildError('invalid from flag value: empty');
      const lower = from.toLowerCase();
      const idx = /^\d+$/.test(from) ? Number(from) : -1;
      const stageState = this.states.find((s) => s !== state && (s.stage.name === lower || s.stage.index === idx));
      if (idx >= 0 && !stageState) throw buildError(`invalid from flag value ${from}: refers to current build stage or a later one`);
      if (stageState) {
        source = await this.materialize(`stage:${stageState.stage.index}`, stageState.layers);
      } else {
        const img = await this.deps.resolveImage(from, { pull: false, platform: state.platform });
        source = await this.materialize(`image:${img.manifestDigest}`, img.layers);
      }
      fromContext = false;
    }

    let owner: Identity = { uid: 0, gid: 0 };
    const view = await this.view(state);
    if (chownFlag !== undefined && chownFlag !== '') {
      owner = parseChown(this.word(state, chownFlag), view.captured.get('etc/passwd'), view.captured.get('etc/group'));
    }
    let chmod: number | undefined;
    if (chmodFlag !== undefined) {
      if (!/^[0-7]{3,4}$/.test(chmodFlag)) throw buildError(`invalid chmod parameter: ${chmodFlag}`);
      chmod = Number.parseInt(chmodFlag, 8);
    }

    // Resolve the sources.
    interface Src {
      rel: string;
      node: NodeMeta;
      shown: string;
      /** A file ADD downloaded (kept as it is: never unpacked). */
      downloaded?: FileTree;
    }
    const found: Src[] = [];
    for (const src of srcs) {
      if (/^[a-z][a-z0-9+.-]*:\/\//i.test(src) || /^git@/.test(src)) {
        if (!isAdd) throw buildError(`${name} failed: source can't be a URL for COPY`);
        if (!/^https?:\/\//i.test(src) || !this.deps.download) {
          throw buildError(`ADD failed: downloading ${src} is not supported by this Stowage agent: only http and https URLs are; download it into the build context and COPY it`);
        }
        found.push(await this.download(src));
        continue;
      }
      if (fromContext && escapesRoot(src)) {
        throw buildError(`${name} failed: forbidden path outside the build context: ${src} ()`);
      }
      const clean = cleanInRoot(src);
      if (hasWildcards(clean)) {
        const matches = this.glob(source, clean);
        for (const m of matches) {
          const rel = source.resolve(m);
          const node = source.get(rel);
          if (node) found.push({ rel, node, shown: m });
        }
        continue;
      }
      const rel = source.resolve(clean);
      const node = source.get(rel);
      if (!node || node.kind === 'other' || node.kind === 'symlink') {
        if (fromContext) throw buildError(`${name} failed: file not found in build context or excluded by .dockerignore: stat ${src}: file does not exist`);
        throw buildError(`${name} failed: stat ${posix.join('/', clean)}: file does not exist`);
      }
      found.push({ rel, node, shown: src });
    }
    if (found.length === 0) throw buildError(`${name} failed: no source files were specified`);

    const destAbs = this.absPath(state, destRaw);
    const destIsDirSyntax = destRaw.endsWith('/') || destRaw.endsWith('/.') || destRaw === '.';
    if (found.length > 1 && !destIsDirSyntax) {
      throw buildError(`When using ${name} with more than one source file, the destination must be a directory and end with a /`);
    }
    const destRel = view.resolve(cleanInRoot(destAbs));
    const destIsDir = destIsDirSyntax || view.get(destRel)?.kind === 'directory';

    const entries = new Map<string, LayerEntry>();
    const hashes: string[] = [];
    const fileMeta = (node: NodeMeta): NodeMeta => ({
      ...node,
      mode: chmod !== undefined && node.kind !== 'symlink' ? chmod : node.mode,
      uid: owner.uid,
      gid: owner.gid,
    });
    const ensureDir = (rel: string, like: NodeMeta | undefined) => {
      if (rel === '') return;
      this.parentEntries(view, rel, owner, entries);
      if (entries.has(rel)) return;
      const existing = view.get(rel);
      if (existing?.kind === 'directory') entries.set(rel, { path: rel, meta: { ...existing } });
      else
        entries.set(rel, {
          path: rel,
          meta: { kind: 'directory', mode: like ? like.mode : 0o755, uid: owner.uid, gid: owner.gid, mtime: like ? like.mtime : new Date(), size: 0 },
        });
    };
    const addFile = async (srcRel: string, node: NodeMeta, target: string, from: FileTree = source) => {
      this.parentEntries(view, target, owner, entries);
      const meta = fileMeta(node);
      const entry: LayerEntry = { path: target, meta };
      if (node.kind === 'file') entry.source = from.abs(srcRel);
      entries.set(target, entry);
      hashes.push(`${target}:${node.kind}:${meta.mode}:${meta.uid}:${meta.gid}:${node.kind === 'file' ? await hashFile(from.abs(srcRel)) : (node.linkname ?? '')}`);
    };

    for (const s of found) {
      if (s.node.kind === 'directory') {
        ensureDir(destRel, s.node);
        for (const d of source.descendants(s.rel)) {
          const node = source.get(d)!;
          if (node.kind === 'other') continue;
          const target = joinRel(destRel, d.slice(s.rel === '' ? 0 : s.rel.length + 1));
          if (node.kind === 'directory') {
            entries.set(target, { path: target, meta: fileMeta(node) });
            this.parentEntries(view, target, owner, entries);
          } else {
            await addFile(d, node, target);
          }
        }
        continue;
      }
      // A file.
      const base = s.rel.slice(s.rel.lastIndexOf('/') + 1);
      if (s.downloaded) {
        await addFile(s.rel, s.node, destIsDir ? joinRel(destRel, base) : destRel, s.downloaded);
        continue;
      }
      if (isAdd && (await isArchive(source.abs(s.rel)))) {
        await this.addArchive(source.abs(s.rel), destRel, owner, view, entries, hashes);
        continue;
      }
      const target = destIsDir ? joinRel(destRel, base) : destRel;
      if (target === '') throw buildError(`${name} failed: cannot copy to the root directory as a file`);
      await addFile(s.rel, s.node, target);
    }

    const hashKind = found.length > 1 ? 'multi' : found[0]!.node.kind === 'directory' ? 'dir' : 'file';
    const hash = createHash('sha256').update(hashes.join('\n')).digest('hex');
    const shownDest = destAbs;
    await this.commitLayer(state, entries, `${state.shell.join(' ')} #(nop) ${name} ${hashKind}:${hash} in ${shownDest} `);
  }

  /**
   * ADD <url>: the file is downloaded (under the engine's fetch policy) as dockerd does it: named after the
   * URL's last path segment (or the Content-Disposition filename), mode 0600, the Last-Modified time.
   */
  private async download(src: string): Promise<{ rel: string; node: NodeMeta; shown: string; downloaded: FileTree }> {
    const got = await this.deps.download!(src, this.deps.signal);
    const original = new URL(src);
    let filename = original.pathname.slice(original.pathname.lastIndexOf('/') + 1);
    if (filename === '') {
      const cd = got.headers['content-disposition'];
      const m = typeof cd === 'string' ? /filename="?([^";]+)"?/i.exec(cd) : null;
      filename = m ? posix.basename(m[1]!) : '';
    }
    filename = decodeURIComponent(filename);
    if (filename === '' || filename === '.' || filename === '..' || filename.includes('/')) {
      got.body.destroy();
      throw buildError(`ADD failed: cannot determine filename from url: ${src}`);
    }
    const dir = join(this.deps.workDir, `url-${this.downloads++}`);
    await mkdir(dir, { recursive: true });
    const tree = new FileTree(dir);
    const ws = createWriteStream(tree.abs(filename), { mode: 0o600, flags: 'wx' });
    await pipeline(got.body, ws);
    const lastModified = Date.parse(String(got.headers['last-modified'] ?? ''));
    const node: NodeMeta = { kind: 'file', mode: 0o600, uid: 0, gid: 0, mtime: new Date(Number.isNaN(lastModified) ? 0 : lastModified), size: ws.bytesWritten };
    tree.nodes.set(filename, node);
    return { rel: filename, node, shown: src, downloaded: tree };
  }

  /** ADD of a local tar archive: its contents are unpacked at the destination. */
  private async addArchive(
    file: string,
    destRel: string,
    owner: Identity,
    view: FileTree,
    entries: Map<string, LayerEntry>,
    hashes: string[],
  ): Promise<void> {
    const dir = join(this.deps.workDir, `add-${entries.size}-${Date.now()}`);
    await mkdir(dir, { recursive: true });
    const tree = new FileTree(dir);
    const fh = await open(file, 'r');
    try {
      await extractInto(tree, fh.createReadStream(), { whiteouts: false });
    } finally {
      await fh.close().catch(() => undefined);
    }
    if (destRel !== '') {
      this.parentEntries(view, destRel, owner, entries);
      if (!entries.has(destRel)) {
        const existing = view.get(destRel);
        entries.set(destRel, {
          path: destRel,
          meta: existing?.kind === 'directory' ? { ...existing } : { kind: 'directory', mode: 0o755, uid: owner.uid, gid: owner.gid, mtime: new Date(), size: 0 },
        });
      }
    }
    // Archives keep their own owners, like Docker (unless --chown is given, which applies to all).
    const chowned = owner.uid !== 0 || owner.gid !== 0;
    for (const d of tree.descendants('')) {
      const node = tree.get(d)!;
      if (node.kind === 'other') continue;
      const target = joinRel(destRel, d);
      const meta = chowned ? { ...node, uid: owner.uid, gid: owner.gid } : { ...node };
      const entry: LayerEntry = { path: target, meta };
      if (node.kind === 'file') entry.source = tree.abs(d);
      this.parentEntries(view, target, owner, entries);
      entries.set(target, entry);
      hashes.push(`${target}:${node.kind}:${node.mode}:${meta.uid}:${meta.gid}:${node.kind === 'file' ? await hashFile(tree.abs(d)) : (node.linkname ?? '')}`);
    }
  }

  /** Expands a wildcard source path against a tree, segment by segment (Go's filepath.Match). */
  private glob(tree: FileTree, pattern: string): string[] {
    const segs = pattern.split('/');
    let current = [''];
    for (let i = 0; i < segs.length; i++) {
      const seg = segs[i]!;
      const next: string[] = [];
      for (const dir of current) {
        const resolvedDir = tree.resolve(dir);
        const node = tree.get(resolvedDir);
        if (!node || node.kind !== 'directory') continue;
        if (!hasWildcards(seg)) {
          if (tree.get(tree.resolve(joinRel(resolvedDir, seg)))) next.push(joinRel(dir, seg));
          continue;
        }
        for (const child of tree.children(resolvedDir)) if (matchSegment(seg, child)) next.push(joinRel(dir, child));
      }
      current = next;
    }
    return current.filter((p) => p !== '').sort();
  }

  // ---- result ---------------------------------------------------------------------------------------

  private finalConfig(state: StageState): ImageConfig {
    const out = cloneJson(state.config);
    out.config = cloneJson(state.container) as ImageConfig['config'];
    delete (out as Json)['container'];
    delete (out as Json)['container_config'];
    delete (out as Json)['docker_version'];
    return out;
  }

  /** The result: the last step's image (the same blobs again), so its ID is the one printed after that step. */
  private commit(state: StageState): Promise<NewImageRecord> {
    return this.writeStage(state);
  }

  private writeStage(state: StageState): Promise<NewImageRecord> {
    const config = this.finalConfig(state);
    return writeImage(
      this.deps.store,
      {
        config,
        layers: state.layers,
        manifestMediaType: state.manifestMediaType === MediaType.OciManifest ? MediaType.OciManifest : MediaType.DockerManifest,
        platform: state.platform,
      },
      this.deps.lease,
    );
  }
}

async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    for await (const chunk of fh.createReadStream()) h.update(chunk as Buffer);
  } finally {
    await fh.close().catch(() => undefined);
  }
  return h.digest('hex');
}

/** Is this file a tar archive (plain, gzip)? ADD unpacks those. */
async function isArchive(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(512);
    const { bytesRead } = await fh.read(buf, 0, 512, 0);
    if (bytesRead >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
      // gzip: only a gzip'd tar counts; inflate the start and look inside.
      const head = Buffer.alloc(64 * 1024);
      const r = await fh.read(head, 0, head.length, 0);
      try {
        const plain = gunzipSync(head.subarray(0, r.bytesRead), { finishFlush: zlibConstants.Z_SYNC_FLUSH });
        return plain.length >= 262 && plain.subarray(257, 262).toString('latin1') === 'ustar';
      } catch {
        return false;
      }
    }
    return bytesRead >= 262 && buf.subarray(257, 262).toString('latin1') === 'ustar';
  } finally {
    await fh.close();
  }
}


/** The LABEL step dockerd adds for `--label`s: keys sorted, each `"key"='value'` (quoted so nothing expands). */
function labelInstruction(labels: Record<string, string>): Instruction | undefined {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return undefined;
  const quote = (v: string) => `'${v.replace(/'/g, "'\\''")}'`;
  return {
    cmd: 'label',
    original: `LABEL ${keys.map((k) => `${JSON.stringify(k)}='${labels[k]}'`).join(' ')}`,
    line: 0,
    flags: [],
    rest: '',
    args: [],
    json: false,
    pairs: keys.map((k) => ({ key: quote(k), value: quote(labels[k]!) })),
  };
}
