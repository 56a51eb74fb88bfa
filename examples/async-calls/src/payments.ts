import { NuropbValidationError } from "@nuropb/protocol";

/** The payment service: charges an amount, when `release` lets it (the example holds it). */
export class PaymentService {
  #charged = 0;
  #open: Promise<void> = Promise.resolve();
  #release: (() => void) | undefined;

  /** Holds every charge until {@link release} (to restart the order service in between). */
  hold(): void {
    this.#open = new Promise((resolve) => (this.#release = resolve));
  }

  /** Lets the held charges through. */
  release(): void {
    this.#release?.();
  }

  async charge(params: { amount: number; reference: string }): Promise<{ receipt: string }> {
    await this.#open;
    if (!(params.amount > 0)) throw new NuropbValidationError("amount must be positive");
    this.#charged++;
    return { receipt: `rcpt-${String(this.#charged)}-${params.reference}` };
  }
}
