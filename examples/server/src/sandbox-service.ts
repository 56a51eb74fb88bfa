import { publishToMesh, type RequestContext } from "@nuropb/core";
import { NuropbAuthorizationError } from "@nuropb/protocol";

/** The name the service is reached by on the mesh. */
export const SERVICE_NAME = "sandbox";

/** The token the examples use; a real service would verify a JWT or ask an identity provider. */
export const DEMO_TOKEN = "Bearer 1234567890";

/** Checks a bearer token and returns the caller's claims (they become `ctx.userClaims`). */
export function authorise(token: unknown): { user: string } {
  if (token === DEMO_TOKEN) return { user: "user-1234" };
  throw new NuropbAuthorizationError("unknown token");
}

/** An event the service received (see `handleEvent`). */
export interface ReceivedEvent {
  readonly topic: string;
  readonly event: unknown;
}

/**
 * The `sandbox` service. Public methods are on the mesh; `publishToMesh` adds authorisation and
 * encryption to the ones that need it.
 */
export class SandboxService {
  #visits = 0;
  readonly #onEvent: (event: ReceivedEvent) => void;

  constructor(onEvent: (event: ReceivedEvent) => void = () => {}) {
    this.#onEvent = onEvent;
  }

  /** Open to anyone. */
  test_method(): string {
    return `response from ${SERVICE_NAME}.test_method`;
  }

  /** A command target: commands get no response, so it just counts. */
  record_visit(): void {
    this.#visits += 1;
  }

  visit_count(): number {
    return this.#visits;
  }

  @publishToMesh({ authorize: authorise, description: "The caller's account; needs a token" })
  get_account(_params: Record<string, never>, ctx: RequestContext): { user: string } {
    return { user: (ctx.userClaims as { user: string }).user };
  }

  @publishToMesh({
    authorize: authorise,
    requiresEncryption: true,
    description: "Keeps a secret note; needs a token and an encrypted call",
    params: { type: "object", required: ["note"], properties: { note: { type: "string" } } },
  })
  save_secret(params: { note: string }, ctx: RequestContext) {
    return { saved: true, length: params.note.length, encrypted: ctx.encrypted };
  }

  /** Receives the events the service is bound to (`eventBindings`). */
  handleEvent(event: ReceivedEvent): void {
    this.#onEvent({ topic: event.topic, event: event.event });
  }
}
