// @nuropb/protocol/transport-kit: what a transport implementation needs beyond the contract in
// "@nuropb/protocol" — the delivery bookkeeping every consumer repeats, and the byte copy our
// transports use for received bodies. Applications never need it.
export { createDeliveryLedger } from "./delivery-ledger.ts";
export { copyBytes } from "./bytes.ts";

export type {
  DeliveryLedger,
  DeliveryLedgerOptions,
  HeldDelivery,
  Settlement,
} from "./delivery-ledger.ts";
