/**
 * Stored responses (`store: true`) on infergate's session store (src/sessions/session-store.ts:
 * in memory, or on Redis so that any replica continues a response), with its TTL and bounds
 * (config `sessions`). A response is one store entry list under its id: the conversation up to
 * and including its answer (serialized `infergate.v1.Message`s, oldest first, without the
 * instructions, which the API does not carry over), then the response object as JSON, last, so
 * that the bounds drop the oldest messages first and never the object.
 *
 * Each caller has its own namespace (the store's tenant argument): the SHA-256 of the API key it
 * presented (what the config holds instead of the key), else its client certificate's name, else
 * the anonymous one. Another key's response is therefore not there: 404, as a missing one.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Message, MessageSchema, Role } from "../../../gen/infergate/v1/chat_pb.js";
import type { CallContext } from "../../core/call-context.js";
import { hashKey, presentedKey } from "../../security/api-keys.js";
import type { SessionStore } from "../../sessions/session-store.js";
import type { ResponseObject } from "./responses-wire.js";

/** A stored response: the object GET returns, and the history `previous_response_id` continues. */
export interface StoredResponse {
  readonly response: ResponseObject;
  readonly history: Message[];
}

/** The namespace of the caller of `ctx` (see the module comment). Never the key itself. */
export function ownerOf(ctx: Pick<CallContext, "headers" | "peerCommonName">): string {
  const key = presentedKey(ctx.headers);
  if (key !== undefined) return `responses key:${hashKey(key)}`;
  if (ctx.peerCommonName !== undefined) return `responses cn:${ctx.peerCommonName}`;
  return "responses";
}

export class ResponseStore {
  /** `maxBytes`: the store's bound of one entry list (config `sessions.maxBytes`). */
  constructor(
    private readonly store: SessionStore,
    private readonly maxBytes: number,
  ) {}

  /**
   * Keeps `response` with its conversation (renewing nothing else: a new id is a new entry list);
   * the oldest messages go first when the bounds are reached. A response object larger than the
   * bound by itself is not kept (the store would drop it with its history): false then.
   */
  async save(owner: string, response: ResponseObject, history: readonly Message[]): Promise<boolean> {
    const json = new TextEncoder().encode(JSON.stringify(response));
    if (json.length > this.maxBytes) return false;
    await this.store.append(owner, response.id, [...history.map((m) => toBinary(MessageSchema, m)), json]);
    return true;
  }

  /** The stored response of this owner; undefined when there is none (never stored, expired, another owner's). */
  async load(owner: string, id: string): Promise<StoredResponse | undefined> {
    const entries = await this.store.load(owner, id);
    const last = entries.at(-1);
    if (last === undefined) return undefined;
    const history = entries.slice(0, -1).map((b) => fromBinary(MessageSchema, b));
    // Bounds drop the oldest messages; a tool result whose call was dropped would be refused by
    // upstreams, so a history never starts with one (as src/sessions/sessions.ts does).
    while (history[0]?.role === Role.TOOL) history.shift();
    return { response: JSON.parse(new TextDecoder().decode(last)) as ResponseObject, history };
  }

  /** Forgets a stored response; false when this owner has none of that id. */
  delete(owner: string, id: string): Promise<boolean> {
    return this.store.delete(owner, id);
  }
}
