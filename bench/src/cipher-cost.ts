import { createPayloadEncryptor, createServiceKeys } from "@nuropb/crypto";
import type { CipherSuite } from "@nuropb/crypto";
import { echoEnvelopes } from "./envelopes.ts";

/** The four encryption operations of one request/response, through the public API. */
export interface CipherRound {
  readonly suite: CipherSuite;
  /** Plaintext bytes sealed: the request envelope and the response envelope. */
  readonly requestBytes: number;
  readonly responseBytes: number;
  /** Seal request, open it, seal the response, open it. Throws when a round trip differs. */
  run(): void;
}

/**
 * Builds one client and one service encryptor and the envelopes nuropb would seal for an echo of
 * `params` (request and response bodies as `encodePayload` writes them).
 */
export function cipherRound(suite: CipherSuite, params: Record<string, unknown>): CipherRound {
  const keys = createServiceKeys({ rsa: true, nacl: true });
  const service = createPayloadEncryptor({ keys });
  const client = createPayloadEncryptor({ suites: [suite] });
  const peer = {
    rsaPublicKeyPem: service.publicKeys.rsaPem,
    naclPublicKey: service.publicKeys.nacl,
    nativePublicKey: service.publicKeys.native,
  };
  const { requestBody: request, responseBody: response } = echoEnvelopes(params);
  return {
    suite,
    requestBytes: request.length,
    responseBytes: response.length,
    run() {
      const sealed = client.sealRequest(request, peer, { suite });
      const opened = service.openRequest(sealed.body, sealed.headers);
      const reply = service.sealResponse(response, opened.replyKey);
      const plain = client.openResponse(reply.body, reply.headers, sealed.replyKey);
      if (plain.length !== response.length || opened.plain.length !== request.length) {
        throw new Error(`${suite}: a round trip changed the envelope`);
      }
    },
  };
}
