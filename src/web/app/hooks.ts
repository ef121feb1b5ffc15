import { useCallback, useEffect, useRef, useState } from 'react';
import type { Operation, TaskEvent } from '../../control/wire.js';
import { type Api, describeError } from './api.js';

export interface Polled<T> {
  data: T | undefined;
  /** The last failure ("CODE: message"); cleared by the next success. */
  error: string | undefined;
  refresh: () => void;
}

/**
 * Calls `load` now and every `everyMs` after the previous call ended (never two at once), keeping the
 * last result. Live views poll this way: the API's list endpoints are cheap and always whole.
 */
export function usePoll<T>(load: () => Promise<T>, everyMs: number, deps: readonly unknown[]): Polled<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<string>();
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;

  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const round = async () => {
      try {
        const value = await loadRef.current();
        if (stopped) return;
        setData(value);
        setError(undefined);
      } catch (err) {
        if (!stopped) setError(describeError(err));
      }
      if (!stopped) timer = setTimeout(() => void round(), everyMs);
    };
    void round();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [everyMs, tick, ...deps]);

  const refresh = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, refresh };
}

/**
 * Follows each operation in `ids` over its SSE stream (GET /api/v1/operations/:id/events) and keeps the
 * latest state of each: live per-target bytes between polls. A stream ends by itself when its operation
 * does; `onEnd` is told so (to refresh what the operation changed).
 */
export function useOperationStreams(api: Api, ids: readonly string[], onEnd?: () => void): Map<string, Operation> {
  const [latest, setLatest] = useState<Map<string, Operation>>(() => new Map());
  const streams = useRef(new Map<string, AbortController>());
  const onEndRef = useRef(onEnd);
  onEndRef.current = onEnd;

  const key = [...ids].sort().join(',');
  useEffect(() => {
    for (const id of ids) {
      if (streams.current.has(id)) continue;
      const abort = new AbortController();
      streams.current.set(id, abort);
      void api
        .events(
          `/api/v1/operations/${encodeURIComponent(id)}/events`,
          (event, data) => {
            // server_close (Backend.AI's end marker) carries no operation.
            if (!event.startsWith('bgtask_')) return;
            const op = (JSON.parse(data) as TaskEvent).operation;
            setLatest((m) => new Map(m).set(op.id, op));
            if (event !== 'bgtask_updated') onEndRef.current?.();
          },
          abort.signal,
        )
        .catch(() => {
          // The poll still shows the operation; a stream that failed is opened again if it is still running.
          streams.current.delete(id);
        });
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [api, key]);

  useEffect(() => {
    const open = streams.current;
    return () => {
      for (const abort of open.values()) abort.abort();
      open.clear();
    };
  }, [api]);
  return latest;
}
