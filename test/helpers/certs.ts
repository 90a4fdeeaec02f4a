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

/**
 * Issues another server certificate (CN=server, same SANs) from the PKI's CA, as a rotation
 * would: `<name>.pem` and `<name>.key` in the PKI's directory, with a new serial and key.
 */
export function issueServerCertificate(pki: TestPki, name: string): { pem: string; key: string } {
  const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: pki.dir, stdio: "pipe" });
  ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=server", "-keyout", `${name}.key`, "-out", `${name}.csr`);
  ssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", `${name}.pem`);
  return { pem: join(pki.dir, `${name}.pem`), key: join(pki.dir, `${name}.key`) };
}
