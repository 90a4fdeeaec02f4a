/**
 * Preloaded into a peer gateway (`node --import ./loopback-only.mjs …`): a server that would
 * listen on every interface (a port and no host) listens on 127.0.0.1 instead, so that benchmark
 * processes are reachable from this machine only.
 */
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" || (typeof args[0] === "string" && /^\d+$/.test(args[0]))) {
    const [port, ...rest] = args;
    const host = typeof rest[0] === "string" ? rest.shift() : "127.0.0.1";
    return listen.call(this, Number(port), host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host, ...rest);
  }
  if (typeof args[0] === "object" && args[0] !== null && !("fd" in args[0]) && !("path" in args[0])) {
    const host = args[0].host;
    args[0] = { ...args[0], host: host === undefined || host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host };
  }
  return listen.apply(this, args);
};
