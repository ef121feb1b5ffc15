/**
 * Runs `work` so that calls arriving while it runs do not start a second one beside it: they share the run
 * under way, which goes round once more afterwards (their reason to call may postdate its start). An image
 * re-list driven by a burst of runtime events costs one or two lists, not one per event.
 */
export class CoalescedRun {
  private running: Promise<void> | undefined;
  private again = false;

  constructor(
    private readonly work: () => Promise<void>,
    private readonly stopped: () => boolean,
  ) {}

  run(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    const loop = async (): Promise<void> => {
      try {
        do {
          this.again = false;
          await this.work();
        } while (this.again && !this.stopped());
      } finally {
        this.running = undefined;
      }
    };
    this.running = loop();
    return this.running;
  }

  /** Resolves once no run is under way (its failure is the caller's of run(), not this waiter's). */
  async idle(): Promise<void> {
    await this.running?.catch(() => undefined);
  }
}
