// @nuropb/protocol/transport-kit: what a transport implementation needs beyond the contract in
// "@nuropb/protocol" — the delivery bookkeeping every consumer repeats, and the byte copy our
// transports use for received bodies. Applications never need it.
export { createDeliveryLedger } from "./delivery-ledger.ts";
export { copyBytes } from "./bytes.ts";
export {
  MAX_CLAIM_KEY_LENGTH,
  MAX_CLAIM_TAKER_LENGTH,
  assertScheduledService,
  scheduledDelayMs,
  assertClaimKey,
  assertClaimTtl,
  assertClaimTaker,
} from "./scheduling.ts";
export {
  assertEventLogRetention,
  assertEventLogTopic,
  assertEventLogReadOptions,
  assertEventLogFollowOptions,
} from "./event-log.ts";

export type {
  DeliveryLedger,
  DeliveryLedgerOptions,
  HeldDelivery,
  Settlement,
} from "./delivery-ledger.ts";
