import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/config/config-error.js";
import { parseConfig } from "../../src/config/load-config.js";

/**
 * Every complete configuration shown in the README and docs/ (a YAML block with both `upstreams:`
 * and `models:` at the top level) is valid as written: the schema, the cross-checks and each
 * kind's own options. Fragments (one section shown alone) are not checked here.
 */
const root = join(import.meta.dirname, "..", "..");
const pages = ["README.md", ...readdirSync(join(root, "docs")).filter((f) => f.endsWith(".md")).map((f) => join("docs", f))];

interface Block {
  page: string;
  line: number;
  text: string;
}

function completeConfigs(page: string): Block[] {
  const lines = readFileSync(join(root, page), "utf8").split("\n");
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== "```yaml") continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && lines[end]!.trim() !== "```") end++;
    const text = lines.slice(start, end).join("\n");
    if (/^upstreams:/m.test(text) && /^models:/m.test(text)) {
      blocks.push({ page, line: start, text });
    }
    i = end;
  }
  return blocks;
}

const blocks = pages.flatMap(completeConfigs);
// Each `${NAME}` resolves to a placeholder, as it would from a real environment.
const env = new Proxy({}, { get: (_t, name) => (typeof name === "string" ? `value-of-${name}` : undefined) });

describe("configurations in the README and docs/", () => {
  it("there are examples to check, including the README's upstream examples", () => {
    expect(blocks.filter((b) => b.page === "README.md").length).toBeGreaterThanOrEqual(8);
    expect(new Set(blocks.map((b) => b.page)).size).toBeGreaterThanOrEqual(5);
  });

  it.each(blocks.map((b) => [`${b.page}:${b.line}`, b] as const))("%s is valid", (_where, block) => {
    try {
      parseConfig(block.text, `${block.page}:${block.line}`, env);
    } catch (err) {
      if (err instanceof ConfigError) {
        expect.fail(err.message);
      }
      throw err;
    }
  });
});
