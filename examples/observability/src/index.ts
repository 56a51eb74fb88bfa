export { main, Inventory, Orders, Storefront } from "./main.ts";
export { formatTraceTree } from "./trace-tree.ts";

export type { ObservabilityOptions } from "./main.ts";
