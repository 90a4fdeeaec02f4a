/**
 * The layer rule of docs/architecture.md ("Layers"), checked by `make deps` (part of `make lint`):
 * a module of src/ imports only from its own layer and the layers below it (`layers`, top first),
 * the policies never from one another, and nothing but main.ts and server/ imports the two
 * composition modules of `topOnly`. Type-only imports count too (tsPreCompilationDeps): a type is
 * part of a layer's contract. gen/ (generated from proto/) is below every layer; test/ and bench/
 * are not checked.
 */

/** The layers, top first; each with why it sits where it does (the comment of its rule). */
const layers = [
  {
    name: "server",
    path: "^src/(server/|main\\.ts$)",
    why: "main.ts and server/ compose the process: listeners, config reload, shutdown. Nothing imports them (bin/infergate.js runs main.ts).",
  },
  {
    name: "ingress",
    path: "^src/ingress/",
    why: "An ingress translates a foreign API (OpenAI's in ingress/openai, Anthropic's in ingress/anthropic) onto the gateway; server/ mounts it, so it never imports server/.",
  },
  {
    name: "gateway",
    path: "^src/gateway/",
    why: "gateway/ composes the policies over the upstreams for every call; the listeners above call it and it never imports them.",
  },
  {
    name: "policies",
    path: "^src/(cache|sessions|security|resilience)/",
    why: "cache/, sessions/, security/ and resilience/ each apply one policy around an upstream call; the gateway composes them, so they never import it (nor one another: policies-not-across).",
  },
  {
    name: "redis",
    path: "^src/redis/",
    why: "redis/ is the client of the Redis stores that the policies share; it knows no policy.",
  },
  {
    name: "upstreams",
    path: "^src/upstreams/",
    why: "An adapter translates and does I/O: it knows the upstream contract (core/) and nothing of what wraps it (resilience wraps it from above: src/gateway/create-upstream.ts).",
  },
  {
    name: "observability",
    path: "^src/observability/",
    why: "observability/ (logger, call record, refusal log) serves every layer above core, so it imports none of them (metrics.ts, which reads cache and redis stats, is top-only).",
  },
  {
    name: "wire",
    path: "^src/wire/",
    why: "wire/ holds the gRPC wire's performance shortcuts (request interning, the wire-byte memo, hand-written encoders; what each saves: src/wire/fast-paths.ts). The listener, the gateway, the cache and upstreams/ use them, so it sits below them all; it needs nothing of core/ today.",
  },
  {
    name: "core",
    path: "^src/core/",
    why: "core/ is the call kernel every layer imports (GatewayError and its reasons, call context, upstream contract, model route, RPC names); it imports no layer, only the config schema its contracts name.",
  },
  {
    name: "config",
    path: "^src/config/",
    why: "config/ is the shape of the configuration (zod only), read by every layer (load-config.ts, which checks a config against the upstream kinds, is top-only).",
  },
];

/** Composition modules that read several layers; only main.ts and server/ import them. */
const topOnly = ["^src/config/load-config\\.ts$", "^src/observability/metrics\\.ts$"];

/** A forbidden import: from modules matching `from` to modules matching `to`; fails `make deps`. */
function forbid(name, comment, from, to) {
  return { name, comment, severity: "error", from, to };
}

const layerRules = layers
  .slice(1)
  .map((layer, i) =>
    forbid(`${layer.name}-imports-only-below`, layer.why, { path: layer.path, pathNot: topOnly }, { path: layers.slice(0, i + 1).map((above) => above.path) }),
  );

module.exports = {
  forbidden: [
    ...layerRules,
    forbid(
      "policies-not-across",
      "Each policy stands alone: the gateway decides their order (cache, sessions, security and resilience never import one another).",
      { path: "^src/(cache|sessions|security|resilience)/" },
      { path: "^src/(cache|sessions|security|resilience)/", pathNot: "^src/$1/" },
    ),
    forbid(
      "top-only-modules",
      "config/load-config.ts (reads the upstream registry) and observability/metrics.ts (reads cache and redis stats) compose several layers: only main.ts and server/ import them.",
      { path: "^src/", pathNot: ["^src/main\\.ts$", "^src/server/", ...topOnly] },
      { path: topOnly },
    ),
    forbid(
      "core-protocol-packages-only",
      "core/ uses node:*, gen/, @connectrpc/connect (Code), @bufbuild/protobuf and zod's types: no transport, store or logger.",
      { path: "^src/core/" },
      { path: "node_modules/", pathNot: "node_modules/(@connectrpc/connect|@bufbuild/protobuf|zod)/" },
    ),
    forbid(
      "wire-protobuf-only",
      "wire/ uses node:*, gen/ and @bufbuild/protobuf only: shortcuts past protobuf-es, nothing of a transport, a store or a logger.",
      { path: "^src/wire/" },
      { path: "node_modules/", pathNot: "node_modules/@bufbuild/protobuf/" },
    ),
    forbid("no-circular", "No module of src/ reaches itself through its imports (type-only ones too).", { path: "^src/" }, { circular: true }),
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsConfig: { fileName: "tsconfig.json" },
    tsPreCompilationDeps: true,
  },
};
