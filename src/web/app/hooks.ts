import { useCallback, useEffect, useRef, useState } from 'react';
import { describeError } from './api.js';

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
