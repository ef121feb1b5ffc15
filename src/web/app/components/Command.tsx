import { useState } from 'react';

/** The stowctl command that does what the control beside it does, with a copy button. */
export function Command({ line }: { line: string }) {
  const [copied, setCopied] = useState(false);
  const copy = () => {
    void navigator.clipboard?.writeText(line).then(() => {
      setCopied(true);
      setTimeout(() => setCopied(false), 1500);
    });
  };
  return (
    <div className="command" data-testid="command">
      <span className="command-label">stowctl equivalent</span>
      <code>{line}</code>
      <button type="button" className="secondary outline command-copy" onClick={copy} title="copy to the clipboard">
        {copied ? 'copied' : 'copy'}
      </button>
    </div>
  );
}
