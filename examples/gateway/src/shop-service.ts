import { publishToMesh, type RequestContext } from "@nuropb/core";
import { NuropbAuthorizationError, NuropbValidationError } from "@nuropb/protocol";

/** The name the service is reached by on the mesh (and in the gateway's URLs). */
export const SERVICE_NAME = "shop";

/** The token the example accepts; a real service would verify a JWT. */
export const DEMO_TOKEN = "Bearer demo";

/** The topic of the event `placeOrder` raises. */
export const ORDERED_TOPIC = "shop.ordered";

/** What the shop sells, in cents. */
export const PRICES_CENTS: Readonly<Record<string, number>> = Object.freeze({
  tea: 450,
  coffee: 300,
  cake: 625,
});

/** Checks a bearer token and returns the caller's claims (they become `ctx.userClaims`). */
export function authorise(token: unknown): { user: string } {
  if (token === DEMO_TOKEN) return { user: "demo" };
  throw new NuropbAuthorizationError("unknown token");
}

/** The params of both methods, as a JSON Schema (checked by core, shown by the gateway). */
const ORDER_LINE = {
  type: "object",
  required: ["item", "quantity"],
  properties: {
    item: { type: "string", enum: Object.keys(PRICES_CENTS) },
    quantity: { type: "integer", minimum: 1, maximum: 100 },
  },
  additionalProperties: false,
} as const;

/** One line of an order. */
export interface OrderLine {
  readonly item: string;
  readonly quantity: number;
}

/** A priced line. */
export interface Quote extends OrderLine {
  readonly totalCents: number;
}

function priced(line: OrderLine): Quote {
  const unit = PRICES_CENTS[line.item];
  if (unit === undefined) throw new NuropbValidationError(`no such item: ${line.item}`);
  return { item: line.item, quantity: line.quantity, totalCents: unit * line.quantity };
}

/** The `shop` service: a quote for anyone, an order for a caller with a token. */
export class ShopService {
  #orders = 0;

  @publishToMesh({
    description: "Prices a quantity of an item",
    params: ORDER_LINE,
    result: {
      type: "object",
      required: ["item", "quantity", "totalCents"],
      properties: {
        item: { type: "string" },
        quantity: { type: "integer" },
        totalCents: { type: "integer" },
      },
    },
  })
  quote(params: OrderLine): Quote {
    return priced(params);
  }

  @publishToMesh({
    authorize: authorise,
    description: `Places an order (needs a token) and announces it on '${ORDERED_TOPIC}'`,
    params: ORDER_LINE,
  })
  placeOrder(params: OrderLine, ctx: RequestContext): Quote & { orderId: string; by: string } {
    const quote = priced(params);
    this.#orders += 1;
    const orderId = `order-${String(this.#orders)}`;
    ctx.addEvent({ topic: ORDERED_TOPIC, event: { orderId, ...quote } });
    return { orderId, by: (ctx.userClaims as { user: string }).user, ...quote };
  }
}
