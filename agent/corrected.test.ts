import { describe, expect, it } from "vitest";
import { MAX_HOURS } from "../crds/hourly.ts";
import { CorrectedErrorLedger, dimmOfLocation, MAX_PAGES } from "./corrected.ts";

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

  describe("a page's DIMM, from EDAC's mc_event", () => {
    const A1 = { label: "CPU_SrcID#0_Ha#0_Chan#1_DIMM#0", mc: 0, layers: [1, 0, -1] };

    it("names it by EDAC's label, else by its layers as rasdaemon's DIMMs are named, else not at all", () => {
      expect(dimmOfLocation(A1)).toEqual({ name: "CPU_SrcID#0_Ha#0_Chan#1_DIMM#0", byLabel: true });
      expect(dimmOfLocation({ label: " A1 \n", mc: 1, layers: [0, 0, -1] })).toEqual({ name: "A1", byLabel: true });
      // EDAC could not pin one DIMM: the layers it knew, an unknown one before a known one kept as -1.
      expect(dimmOfLocation({ label: "DIMM_A1 or DIMM_A2", mc: 1, layers: [-1, 0, -1] })).toEqual({ name: "mc1/-1.0", byLabel: false });
      expect(dimmOfLocation({ label: "unknown memory", mc: 2, layers: [3, -1, -1] })).toEqual({ name: "mc2/3", byLabel: false });
      expect(dimmOfLocation({ label: "", mc: 0, layers: [1, 2, 3] })).toEqual({ name: "mc0/1.2.3", byLabel: false });
      expect(dimmOfLocation({ label: "any memory", mc: 0, layers: [-1, -1, -1] })).toBeUndefined();
      expect(dimmOfLocation({ label: "DIMM_A1 or DIMM_A2", mc: 0, layers: [-1, -1, -1] })).toBeUndefined();
      expect(dimmOfLocation({ label: "x".repeat(300), mc: 0, layers: [0, 0, 0] })?.name).toHaveLength(128);
    });

    it("publishes it with the page, whether it came before the page's first count or after", () => {
      const ledger = new CorrectedErrorLedger();
      // Before: kept aside, published with the count.
      expect(ledger.locateDimm(0x5203, A1)).toBe(true);
      expect(ledger.pages()).toEqual([]);
      ledger.count(0x5203, T0);
      // After.
      ledger.count(0x6205, T0);
      expect(ledger.locateDimm(0x6205, { label: "DIMM_B1 or DIMM_B2", mc: 1, layers: [0, -1, -1] })).toBe(true);
      expect(ledger.pages().map((p) => [p.pfn, p.dimm, p.count])).toEqual([
        ["0x5203", "CPU_SrcID#0_Ha#0_Chan#1_DIMM#0", 1],
        ["0x6205", "mc1/0", 1],
      ]);
      // The same again changes nothing; a label replaces a name by layers, never the reverse.
      expect(ledger.locateDimm(0x5203, A1)).toBe(false);
      expect(ledger.locateDimm(0x5203, { label: "A or B", mc: 0, layers: [1, -1, -1] })).toBe(false);
      expect(ledger.locateDimm(0x6205, { label: "DIMM_B2", mc: 1, layers: [0, 1, -1] })).toBe(true);
      expect(ledger.locateDimm(0x6205, { label: "any memory", mc: 1, layers: [-1, -1, -1] })).toBe(false);
      expect(ledger.pages().map((p) => p.dimm)).toEqual(["CPU_SrcID#0_Ha#0_Chan#1_DIMM#0", "DIMM_B2"]);
      // A retired page keeps its DIMM too.
      ledger.locateDimm(0x7207, A1);
      ledger.softOfflined(0x7207, T0);
      expect(ledger.pages().find((p) => p.pfn === "0x7207")?.dimm).toBe("CPU_SrcID#0_Ha#0_Chan#1_DIMM#0");
    });

    it("stays bounded when EDAC names pages that are never counted, and they never push a counted page out", () => {
      const ledger = new CorrectedErrorLedger();
      ledger.count(0x5203, T0);
      for (let i = 0; i < 10_000; i++) ledger.locateDimm(0x100000 + i, A1);
      expect(ledger.pages().map((p) => p.pfn)).toEqual(["0x5203"]);
      expect(ledger.data().pendingDimms).toHaveLength(MAX_PAGES);
      // The ones said last are kept.
      ledger.count(0x100000 + 9_999, T0 + 1);
      ledger.count(0x100000, T0 + 1);
      expect(ledger.pages().map((p) => [p.pfn, p.dimm])).toEqual([
        ["0x5203", undefined],
        ["0x100000", undefined],
        ["0x10270f", "CPU_SrcID#0_Ha#0_Chan#1_DIMM#0"],
      ]);
    });
  });

  it("comes back from what the state file kept", () => {
    const ledger = new CorrectedErrorLedger();
    ledger.count(0x5203, T0);
    ledger.reported(0x5203);
    ledger.locateDimm(0x5203, { label: "A1", mc: 0, layers: [0, 0, -1] });
    ledger.locateDimm(0x6205, { label: "B1", mc: 0, layers: [1, 0, -1] });
    const again = new CorrectedErrorLedger(JSON.parse(JSON.stringify(ledger.data())) as ReturnType<CorrectedErrorLedger["data"]>);
    expect(again.count(0x5203, T0 + 1)).toBe(false);
    expect(again.pages()[0]?.count).toBe(2);
    // The DIMMs, of a page counted and of one not yet.
    again.count(0x6205, T0 + 2);
    expect(again.pages().map((p) => [p.pfn, p.dimm])).toEqual([
      ["0x5203", "A1"],
      ["0x6205", "B1"],
    ]);
  });
  it("remembers how many page events this boot made, across a restart", () => {
    const ledger = new CorrectedErrorLedger();
    for (let pfn = 1; pfn <= 5; pfn++) {
      ledger.count(pfn, T0);
      ledger.reported(pfn);
    }
    expect(ledger.made).toBe(5);
    expect(new CorrectedErrorLedger(ledger.data()).made).toBe(5);
  });
});
