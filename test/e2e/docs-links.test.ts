// The repository's Markdown links: each stays inside the repository and resolves (links.ts). Needs no
// cluster; it sits in the e2e tier because the unit project only collects tests beside the code.
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { anchorOf, brokenLinks, markdownFiles } from "./links.ts";

describe("Markdown links", () => {
  it("every link in every .md file stays in the repository and resolves", () => {
    expect(markdownFiles().length).toBeGreaterThan(10);
    expect(brokenLinks().map((b) => `${b.file}:${b.line}: ${b.target} (${b.why})`)).toEqual([]);
  });

  it("the check finds addresses, paths out of the tree, missing files and missing headings, and ignores code", () => {
    const root = mkdtempSync(join(tmpdir(), "links-"));
    mkdirSync(join(root, "docs"));
    writeFileSync(join(root, "docs", "b.md"), "# The agent's host access\n\n## `values.yaml` keys\n");
    writeFileSync(
      join(root, "a.md"),
      [
        "[web](https://example.org/x) and <http://example.org/y> and https://example.org/z",
        "[out](../elsewhere.md) [missing](docs/none.md) [dir](docs/) [ok](docs/b.md#the-agents-host-access)",
        "[code heading](docs/b.md#valuesyaml-keys) [bad anchor](docs/b.md#nowhere) [self](#title)",
        "`[in code](https://example.org/code)`",
        "```",
        "[in a block](missing-too.md) https://example.org/block",
        "```",
        "# Title",
      ].join("\n"),
    );
    expect(brokenLinks(root).map((b) => `${b.line} ${b.target}: ${b.why}`)).toEqual([
      "1 https://example.org/x: points outside the repository",
      "2 ../elsewhere.md: climbs out of the repository",
      "2 docs/none.md: no such file: docs/none.md",
      "3 docs/b.md#nowhere: no heading for #nowhere in docs/b.md",
      "1 http://example.org/y: points outside the repository",
      "1 https://example.org/z: points outside the repository",
    ]);
    expect(anchorOf("Deploy with Helm")).toBe("deploy-with-helm");
  });
});
