import { describe, expect, it } from "vitest";
import { CorrectedErrorLedger, MAX_HOURS, MAX_PAGES } from "./corrected.ts";

const HOUR = 3_600_000;
const T0 = Date.parse("2026-12-01T10:00:00Z");

describe("CorrectedErrorLedger", () => {
  it("says a page is new until its event is made, and counts every error per hour", () => {
    const ledger = new CorrectedErrorLedger();
    expect(ledger.count(0x5203, T0)).toBe(true);
    // Held back (the rate limit): still new with its next error.
    expect(ledger.count(0x5203, T0 + 1000)).toBe(true);
    ledger.reported(0x5203);
    expect(ledger.count(0x5203, T0 + HOUR)).toBe(false);
    ledger.locate(0x5203, { size: "2Mi", headPfn: "0x5200", numaNode: 0 });
    expect(ledger.pages()).toEqual([
      {
        pfn: "0x5203",
        hugepage: { size: "2Mi", headPfn: "0x5200", numaNode: 0 },
        count: 3,
        lastAt: new Date(T0 + HOUR).toISOString(),
        hourly: [
          { hour: "2026-12-01T10:00:00.000Z", count: 2 },
          { hour: "2026-12-01T11:00:00.000Z", count: 1 },
        ],
      },
    ]);
  });

  it("stays bounded in a storm: the page seen longest ago goes, and a week of hours is kept", () => {
    const ledger = new CorrectedErrorLedger();
    for (let i = 0; i < 10_000; i++) ledger.count(0x100000 + i, T0 + i);
    const pages = ledger.pages();
    expect(pages).toHaveLength(MAX_PAGES);
    expect(pages[0]?.pfn).toBe((0x100000 + 10_000 - MAX_PAGES).toString(16).replace(/^/, "0x"));
    for (let h = 0; h < 400; h++) ledger.count(0x5203, T0 + 20_000 + h * HOUR);
    const page = ledger.pages().find((p) => p.pfn === "0x5203");
    expect(page?.count).toBe(400);
    expect(page?.hourly).toHaveLength(MAX_HOURS);
    expect(page?.hourly?.[0]?.hour).toBe(new Date(T0 + (400 - MAX_HOURS) * HOUR).toISOString());
  });

  it("marks a retired page, known before or not", () => {
    const ledger = new CorrectedErrorLedger();
    ledger.count(0x5203, T0);
    ledger.softOfflined(0x5203, T0 + 5);
    ledger.softOfflined(0x6205, T0 + 6);
    expect(ledger.pages().map((p) => [p.pfn, p.count, p.softOfflined])).toEqual([
      ["0x5203", 1, true],
      ["0x6205", 1, true],
    ]);
  });

  it("turns EDAC's counters into hours: the first reading is a baseline, a rise is new errors, a reset counts from zero", () => {
    const ledger = new CorrectedErrorLedger();
    ledger.readDimms([{ name: "mc0/dimm0", label: "A1", correctedErrors: 500 }], T0);
    expect(ledger.dimms()).toEqual([{ name: "mc0/dimm0", label: "A1", correctedErrors: 500 }]);
    ledger.readDimms([{ name: "mc0/dimm0", label: "A1", correctedErrors: 507 }], T0 + 60_000);
    ledger.readDimms([{ name: "mc0/dimm0", label: "A1", correctedErrors: 3 }], T0 + HOUR);
    expect(ledger.dimms()[0]?.hourly).toEqual([
      { hour: "2026-12-01T10:00:00.000Z", count: 7 },
      { hour: "2026-12-01T11:00:00.000Z", count: 3 },
    ]);
  });

  it("comes back from what the state file kept", () => {
    const ledger = new CorrectedErrorLedger();
    ledger.count(0x5203, T0);
    ledger.reported(0x5203);
    const again = new CorrectedErrorLedger(JSON.parse(JSON.stringify(ledger.data())) as ReturnType<CorrectedErrorLedger["data"]>);
    expect(again.count(0x5203, T0 + 1)).toBe(false);
    expect(again.pages()[0]?.count).toBe(2);
  });
});
