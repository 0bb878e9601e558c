import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { describe, expect, it } from "vitest";
import { rasdaemonCorrectedErrors } from "./rasdaemon.ts";

describe("rasdaemonCorrectedErrors", () => {
  it("sums corrected mc_event rows of rasdaemon's schema", () => {
    const path = join(mkdtempSync(join(tmpdir(), "ras-")), "ras-mc_event.db");
    const db = new DatabaseSync(path);
    db.exec(
      "CREATE TABLE mc_event (id INTEGER PRIMARY KEY, timestamp TEXT, err_count INTEGER, err_type TEXT, err_msg TEXT, label TEXT, mc INTEGER, top_layer INTEGER, middle_layer INTEGER, lower_layer INTEGER, address INTEGER, grain INTEGER, syndrome INTEGER, driver_detail TEXT)",
    );
    const insert = db.prepare("INSERT INTO mc_event (timestamp, err_count, err_type) VALUES (?, ?, ?)");
    insert.run("2026-01-01 00:00:00 +0000", 3, "Corrected");
    insert.run("2026-01-01 00:00:01 +0000", 1, "Uncorrected");
    insert.run("2026-01-01 00:00:02 +0000", 2, "Corrected");
    db.close();
    expect(rasdaemonCorrectedErrors(path)).toBe(5);
  });

  it("gives nothing without a database or with another schema", () => {
    const dir = mkdtempSync(join(tmpdir(), "ras-"));
    expect(rasdaemonCorrectedErrors(join(dir, "none.db"))).toBeUndefined();
    const path = join(dir, "other.db");
    new DatabaseSync(path).close();
    expect(rasdaemonCorrectedErrors(path)).toBeUndefined();
  });
});
