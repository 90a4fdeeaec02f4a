// The demo client of deploy/compose.yaml: calls infergate over the Connect protocol with JSON
// (plain HTTP, no generated code) — ListModels, Chat, then a streamed Generate — and prints what
// it got. Needs Node.js 18 or later (fetch). Exits 0 when every call answered, 1 otherwise.
//
//   INFERGATE_URL=http://127.0.0.1:8080 INFERGATE_MODEL=mock-chat node deploy/demo-client.mjs

const base = (process.env.INFERGATE_URL ?? "http://127.0.0.1:8080").replace(/\/$/, "");
const model = process.env.INFERGATE_MODEL ?? "mock-chat";
const service = `${base}/infergate.v1.InferenceService`;
const headers = { "connect-protocol-version": "1", "connect-timeout-ms": "10000" };

/** A unary call: JSON in, JSON out; a non-200 answer is a Connect error body. */
async function unary(method, request) {
  const res = await fetch(`${service}/${method}`, {
    method: "POST",
    headers: { ...headers, "content-type": "application/json" },
    body: JSON.stringify(request),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`${method}: ${body.code}: ${body.message}`);
  return body;
}

/**
 * A server-streaming call: the request and every response are enveloped (1 flag byte, 4 bytes of
 * big-endian length, the JSON); the last envelope has flag 0x02 and holds the end of the stream,
 * with an error if the call failed (https://connectrpc.com/docs/protocol#streaming-response).
 */
async function* serverStream(method, request) {
  const json = Buffer.from(JSON.stringify(request));
  const envelope = Buffer.alloc(5 + json.length);
  envelope.writeUInt32BE(json.length, 1);
  json.copy(envelope, 5);
  const res = await fetch(`${service}/${method}`, {
    method: "POST",
    headers: { ...headers, "content-type": "application/connect+json" },
    body: envelope,
  });
  if (res.status !== 200) throw new Error(`${method}: HTTP ${res.status}: ${await res.text()}`);
  let buffered = Buffer.alloc(0);
  for await (const chunk of res.body) {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
      const flags = buffered[0];
      const size = buffered.readUInt32BE(1);
      const message = JSON.parse(buffered.subarray(5, 5 + size).toString("utf8"));
      buffered = buffered.subarray(5 + size);
      if ((flags & 0x02) !== 0) {
        if (message.error !== undefined) throw new Error(`${method}: ${message.error.code}: ${message.error.message}`);
        return;
      }
      yield message;
    }
  }
  throw new Error(`${method}: the stream ended without its end-of-stream message`);
}

const user = (text) => [{ role: "ROLE_USER", content: [{ text }] }];

try {
  const { models = [] } = await unary("ListModels", {});
  console.log(`models: ${models.map((m) => m.name).join(", ")}`);

  const chat = await unary("Chat", { model, messages: user("hello from the demo client") });
  console.log(`chat: ${chat.message.content.map((p) => p.text ?? "").join("")}`);

  let text = "";
  let finish = "";
  for await (const event of serverStream("Generate", { model, messages: user("stream this answer") })) {
    if (event.textDelta !== undefined) text += event.textDelta;
    if (event.final !== undefined) finish = event.final.finishReason;
  }
  console.log(`generate: ${text} (${finish})`);
} catch (err) {
  console.error(`demo client: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
