import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A throwaway CA with server and client certificates (openssl), valid for 127.0.0.1/localhost. */
export interface TestPki {
  readonly dir: string;
  readonly caPem: string;
  readonly serverPem: string;
  readonly serverKey: string;
  readonly clientPem: string;
  readonly clientKey: string;
}

/** Makes a CA and a server and a client certificate (CN=server, CN=client) in a new temp dir. */
export function createTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "infergate-pki-"));
  const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem");
  writeFileSync(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  for (const who of ["server", "client"]) {
    ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", `/CN=${who}`, "-keyout", `${who}.key`, "-out", `${who}.csr`);
    ssl("x509", "-req", "-in", `${who}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", `${who}.pem`);
  }
  return {
    dir,
    caPem: join(dir, "ca.pem"),
    serverPem: join(dir, "server.pem"),
    serverKey: join(dir, "server.key"),
    clientPem: join(dir, "client.pem"),
    clientKey: join(dir, "client.key"),
  };
}
