import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { describe, expect, it } from "vitest";
import { dimmName, parseRasdaemonTimestamp, rasdaemonCorrectedErrors, rasdaemonDimmErrors } from "./rasdaemon.ts";

// rasdaemon's mc_event as ras-record.c creates it.
const MC_EVENT =
  "CREATE TABLE mc_event (id INTEGER PRIMARY KEY, timestamp TEXT, err_count INTEGER, err_type TEXT, err_msg TEXT, label TEXT, mc INTEGER, top_layer INTEGER, middle_layer INTEGER, lower_layer INTEGER, address INTEGER, grain INTEGER, syndrome INTEGER, driver_detail TEXT)";

interface Row {
  at: string;
  count?: number;
  type?: string;
  label?: string;
  mc?: number;
  layers?: [number, number, number];
}

function database(rows: Row[]): string {
  const path = join(mkdtempSync(join(tmpdir(), "ras-")), "ras-mc_event.db");
  const db = new DatabaseSync(path);
  db.exec(MC_EVENT);
  const insert = db.prepare(
    "INSERT INTO mc_event (timestamp, err_count, err_type, err_msg, label, mc, top_layer, middle_layer, lower_layer, address, grain, syndrome, driver_detail) VALUES (?, ?, ?, '', ?, ?, ?, ?, ?, 0, 64, 0, '')",
  );
  for (const row of rows) {
    const [top, middle, lower] = row.layers ?? [0, 0, -1];
    insert.run(row.at, row.count ?? 1, row.type ?? "Corrected", row.label ?? "", row.mc ?? 0, top, middle, lower);
  }
  db.close();
  return path;
}

const HOUR = 3_600_000;
const NOW = Date.UTC(2024, 4, 8, 12, 30); // 2024-05-08 12:30 UTC
const CURRENT_HOUR = Date.UTC(2024, 4, 8, 12);
const FIRST_HOUR = CURRENT_HOUR - 167 * HOUR; // 2024-05-01 13:00 UTC

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

describe("rasdaemonDimmErrors", () => {
  it("groups rows by controller and layers, with the latest label, corrected and other errors apart", () => {
    const at = "2024-05-08 12:00:00 +0000";
    const path = database([
      { at, count: 1, mc: 0, layers: [1, 0, -1], label: "CPU_SrcID#0_Ha#0_Chan#1_DIMM#0" },
      { at, count: 2, mc: 0, layers: [1, 0, -1], label: "" },
      { at, count: 1, mc: 0, layers: [1, 0, -1], label: "CPU_SrcID#0_Ha#0_Chan#1_DIMM#0 (new)" },
      { at, count: 1, mc: 0, layers: [1, 0, -1], label: "" },
      { at, count: 1, mc: 0, layers: [1, 0, -1], type: "Uncorrected" },
      { at, count: 1, mc: 0, layers: [1, 0, -1], type: "Fatal" },
      // sb_edac in lockstep: the channel unknown, the DIMM known.
      { at, count: 3, mc: 0, layers: [-1, 0, -1], label: "CPU_SrcID#0_Ha#0_Chan#0_DIMM#0 or CPU_SrcID#0_Ha#0_Chan#1_DIMM#0" },
      { at, count: 4, mc: 1, layers: [-1, -1, -1], label: "any memory" },
      { at, count: 5, mc: 10, layers: [2, 1, 0], type: "Uncorrected" },
      { at, count: 1, mc: 2, layers: [0, 1, 0] },
    ]);
    const dimms = rasdaemonDimmErrors(path, NOW);
    expect(dimms?.map((dimm) => ({ ...dimm, hourly: undefined }))).toEqual([
      { name: "mc0/1.0", label: "CPU_SrcID#0_Ha#0_Chan#1_DIMM#0 (new)", correctedErrors: 5, uncorrectedErrors: 2 },
      {
        name: "mc0/-1.0",
        label: "CPU_SrcID#0_Ha#0_Chan#0_DIMM#0 or CPU_SrcID#0_Ha#0_Chan#1_DIMM#0",
        correctedErrors: 3,
        uncorrectedErrors: 0,
      },
      { name: "mc1/noinfo", label: "any memory", correctedErrors: 4, uncorrectedErrors: 0 },
      { name: "mc2/0.1.0", correctedErrors: 1, uncorrectedErrors: 0 },
      { name: "mc10/2.1.0", correctedErrors: 0, uncorrectedErrors: 5 },
    ]);
    expect(dimms?.[0]?.hourly).toEqual([{ hour: CURRENT_HOUR, count: 5 }]);
    expect(dimms?.[4]?.hourly).toEqual([]);
  });

  it("counts corrected errors per UTC hour of the last 168, oldest first, whatever the rows' offsets", () => {
    const path = database([
      { at: "2024-05-08 12:29:59 +0000", count: 2 },
      { at: "2024-05-08 14:10:00 +0200", count: 1 }, // 12:10 UTC
      { at: "2024-05-08 03:00:00 -0800", count: 4 }, // 11:00 UTC
      { at: "2024-05-01 13:00:00 +0000", count: 1 }, // the first hour of the window
      { at: "2024-05-01 01:00:00 -1200", count: 1 }, // 13:00 UTC too, its text half a day earlier
      { at: "2024-05-01 12:59:59 +0000", count: 8 }, // an hour too old
      { at: "2024-04-01 10:00:00 +0000", count: 16 },
      { at: "2024-05-08 13:00:00 +0000", count: 32 }, // past the current hour
      { at: "2024-05-08 12:15:00 +0000", count: 64, type: "Uncorrected" },
    ]);
    expect(rasdaemonDimmErrors(path, NOW)).toEqual([
      {
        name: "mc0/0.0",
        correctedErrors: 2 + 1 + 4 + 1 + 1 + 8 + 16 + 32,
        uncorrectedErrors: 64,
        hourly: [
          { hour: FIRST_HOUR, count: 2 },
          { hour: CURRENT_HOUR - HOUR, count: 4 },
          { hour: CURRENT_HOUR, count: 3 },
        ],
      },
    ]);
  });

  it("counts rows of unparseable timestamps in the total only", () => {
    const path = database([
      { at: "2024-05-08 12:00:00 +0000", count: 1 },
      { at: "yesterday", count: 2 },
      { at: "2024-05-08 12:00:00", count: 4 },
      { at: "2024-05-08T12:00:00Z", count: 8 },
      { at: "2024-02-30 12:00:00 +0000", count: 16 },
      { at: "2024-05-08 24:00:00 +0000", count: 32 },
    ]);
    expect(rasdaemonDimmErrors(path, NOW)?.[0]).toMatchObject({ correctedErrors: 63, hourly: [{ hour: CURRENT_HOUR, count: 1 }] });
  });

  it("gives an empty list for an empty table, nothing without a database, table or columns", () => {
    expect(rasdaemonDimmErrors(database([]), NOW)).toEqual([]);
    const dir = mkdtempSync(join(tmpdir(), "ras-"));
    expect(rasdaemonDimmErrors(join(dir, "none.db"), NOW)).toBeUndefined();
    const empty = join(dir, "empty.db");
    new DatabaseSync(empty).close();
    expect(rasdaemonDimmErrors(empty, NOW)).toBeUndefined();
    const older = join(dir, "older.db");
    const db = new DatabaseSync(older);
    db.exec("CREATE TABLE mc_event (id INTEGER PRIMARY KEY, timestamp TEXT, err_count INTEGER, err_type TEXT)");
    db.close();
    expect(rasdaemonDimmErrors(older, NOW)).toBeUndefined();
  });

  it("keeps the 128 locations with most corrected errors", () => {
    const rows = Array.from({ length: 130 }, (_, i): Row => ({ at: "2024-05-08 12:00:00 +0000", count: i + 1, mc: 0, layers: [i, -1, -1] }));
    const names = rasdaemonDimmErrors(database(rows), NOW)?.map((d) => d.name);
    expect(names).toHaveLength(128);
    expect(names?.slice(0, 2)).toEqual(["mc0/2", "mc0/3"]);
    expect(names?.at(-1)).toBe("mc0/129");
  });
});

describe("rasdaemon locations and timestamps", () => {
  it("names a location by its known layers", () => {
    expect(dimmName(0, [2, 1, 0])).toBe("mc0/2.1.0");
    expect(dimmName(3, [2, -1, -1])).toBe("mc3/2");
    expect(dimmName(0, [-1, 1, -1])).toBe("mc0/-1.1");
    expect(dimmName(1, [-1, -1, -1])).toBe("mc1/noinfo");
  });

  it("parses rasdaemon's local time with its offset", () => {
    expect(parseRasdaemonTimestamp("2024-05-01 10:00:00 +0000")).toBe(Date.UTC(2024, 4, 1, 10));
    expect(parseRasdaemonTimestamp("2024-05-01 15:30:00 +0530")).toBe(Date.UTC(2024, 4, 1, 10));
    expect(parseRasdaemonTimestamp("2024-04-30 23:00:00 -1100")).toBe(Date.UTC(2024, 4, 1, 10));
    expect(parseRasdaemonTimestamp("2024-02-29 00:00:00 +0000")).toBe(Date.UTC(2024, 1, 29));
    for (const text of ["2023-02-29 00:00:00 +0000", "2024-05-01 10:60:00 +0000", "2024-05-01 10:00:00 +0060", "2024-05-01 10:00:00 UTC", ""]) {
      expect(parseRasdaemonTimestamp(text)).toBeUndefined();
    }
  });
});
