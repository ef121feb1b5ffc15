/** A refusal or failure from the control plane, shown as stowctl would print it. */
export function ErrorNote({ error }: { error: string | undefined }) {
  if (!error) return null;
  return (
    <p className="error-note" role="alert">
      {error}
    </p>
  );
}

export function ProgressBar({ value, max, label }: { value: number; max: number | null | undefined; label?: string }) {
  return max ? <progress value={Math.min(value, max)} max={max} aria-label={label} /> : <progress aria-label={label} />;
}

const STATUS_CLASS: Record<string, string> = {
  online: 'ok',
  present: 'ok',
  succeeded: 'ok',
  skipped_present: 'ok',
  absent: 'muted',
  offline: 'bad',
  unknown: 'muted',
  failed: 'bad',
  partially_failed: 'bad',
  cancelled: 'muted',
  running: 'busy',
  transferring: 'busy',
  pending: 'muted',
};

export function Badge({ status }: { status: string }) {
  return <span className={`badge ${STATUS_CLASS[status] ?? ''}`}>{status.replace(/_/g, ' ')}</span>;
}
