export { OrderService, PAYMENT_DEADLINE_MS } from "./orders.ts";
export { PaymentService } from "./payments.ts";
export { main } from "./main.ts";
export type { Order, OrderStore } from "./orders.ts";
