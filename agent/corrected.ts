// Corrected memory errors counted without flooding the API: the first one on a 4 KiB page becomes that
// page's MemoryErrorEvent, every later one only a count here, per page and per DIMM, in hourly buckets
// for a week, published in NodeMemoryHealth (spec.correctedErrorPages, spec.dimms) for the operator's
// risk model. Bounded whatever the storm: at most MAX_PAGES pages (the one seen longest ago goes) and
// MAX_HOURS buckets each. Kept in the agent's state file, so a restart neither forgets a count nor
// makes a known page's event again; a new boot starts over, as the pfns and the EDAC counters do.
// A page's DIMM comes from EDAC's ras:mc_event, which locates the error at the same address: the
// operator's risk model finds the page's DIMM in spec.dimms by it.
import type { NodeMemoryHealthSpecCorrectedErrorPage, NodeMemoryHealthSpecDimm } from "../crds/generated.ts";
import { clip } from "../crds/validate.ts";
import { addToHour, hourlyOut, type HourlyCount } from "../crds/hourly.ts";
import { formatPfn, parseHex, type HugepageSize } from "../kernel/pfn.ts";
import { keepMostCorrected, MAX_DIMMS, type EdacDimm } from "./host.ts";
import { dimmName } from "./rasdaemon.ts";

export const MAX_PAGES = 64;
/** Pages whose event is remembered; one forgotten only costs a create answered 409 on its next error. */
const MAX_REPORTED = 4096;

/** NodeMemoryHealth spec.correctedErrorPages[].dimm's maxLength. */
const DIMM_MAX = 128;

interface PageCount {
  pfn: number;
  hugepage?: { size: HugepageSize; headPfn: number; numaNode?: number | undefined } | undefined;
  /** The DIMM the page is on, as published (see dimmOfLocation). */
  dimm?: string | undefined;
  /** `dimm` is EDAC's label, not the layers' name: a name by layers never replaces it. */
  dimmByLabel?: boolean | undefined;
  count: number;
  lastAt: number;
  hourly: HourlyCount[];
  softOfflined?: boolean | undefined;
}

/** Where EDAC's mc_event located an error: its label(s), memory controller and layers (-1 unknown). */
export interface DimmLocation {
  label: string;
  mc: number;
  layers: readonly number[];
}

/** A page's DIMM as published, and whether it is EDAC's label. */
export interface PageDimm {
  name: string;
  byLabel: boolean;
}

/** A DIMM said of a page the ledger does not count yet. */
interface PendingDimm extends PageDimm {
  pfn: number;
}

// EDAC's words when it knows no DIMM: no layer known, or no populated DIMM at the layers it knows.
const NO_DIMM = new Set(["", "any memory", "unknown memory"]);

/**
 * The name a page's DIMM is published under, which the operator looks up among spec.dimms' names and labels:
 * EDAC's label when it names one DIMM (the dimm_label EDAC's counters carry, and rasdaemon's label); else, when
 * EDAC could only say "A or B" or no label, the layers' name rasdaemon's DIMMs have (mc<mc>/<top>.<mid>.<low>,
 * trailing unknown layers dropped). Undefined when EDAC knew no layer either.
 */
export function dimmOfLocation({ label, mc, layers }: DimmLocation): PageDimm | undefined {
  const text = label.trim();
  if (!NO_DIMM.has(text) && !text.includes(" or ")) return { name: clip(text, DIMM_MAX), byLabel: true };
  if (layers.every((layer) => layer < 0)) return undefined;
  return { name: clip(dimmName(mc, [...layers]), DIMM_MAX), byLabel: false };
}

interface DimmCount {
  name: string;
  label?: string | undefined;
  correctedErrors: number;
  uncorrectedErrors?: number | undefined;
  hourly: HourlyCount[];
}

/** What the state file keeps. */
export interface CorrectedLedgerData {
  pages: PageCount[];
  dimms: DimmCount[];
  /** Pfns whose event was made this boot, including pages since pushed out of `pages`. */
  reported: number[];
  /** How many page events were made this boot. */
  made?: number;
  /** DIMMs said of pages before their first count (EDAC decodes an error as the kernel logs it), at most MAX_PAGES. */
  pendingDimms?: PendingDimm[] | undefined;
}

/** A DIMM's counts as NodeMemoryHealth spec.dimms holds them, from EDAC's counters or rasdaemon's rows. */
export function dimmEntry(dimm: DimmCount): NodeMemoryHealthSpecDimm {
  return {
    name: dimm.name,
    ...(dimm.label !== undefined && { label: dimm.label }),
    correctedErrors: dimm.correctedErrors,
    ...(dimm.uncorrectedErrors !== undefined && { uncorrectedErrors: dimm.uncorrectedErrors }),
    ...(dimm.hourly.length > 0 && { hourly: hourlyOut(dimm.hourly) }),
  };
}

export class CorrectedErrorLedger {
  readonly #pages = new Map<number, PageCount>();
  readonly #dimms = new Map<string, DimmCount>();
  readonly #reported = new Set<number>();
  #made = 0;
  /** Apart from #pages, so that DIMMs said of pages never counted cannot push counted pages out. */
  readonly #pendingDimms = new Map<number, PageDimm>();

  constructor(saved?: CorrectedLedgerData) {
    for (const page of saved?.pages ?? []) this.#pages.set(page.pfn, page);
    for (const dimm of saved?.dimms ?? []) this.#dimms.set(dimm.name, dimm);
    for (const pfn of saved?.reported ?? []) this.#reported.add(pfn);
    this.#made = saved?.made ?? this.#reported.size;
    for (const { pfn, name, byLabel } of saved?.pendingDimms ?? []) this.#pendingDimms.set(pfn, { name, byLabel });
  }

  /** A page the ledger did not know, with the DIMM said of it before, if any. */
  #newPage(pfn: number, at: number): PageCount {
    const page: PageCount = { pfn, count: 0, lastAt: at, hourly: [] };
    const dimm = this.#pendingDimms.get(pfn);
    if (dimm !== undefined) {
      this.#pendingDimms.delete(pfn);
      Object.assign(page, { dimm: dimm.name, dimmByLabel: dimm.byLabel });
    }
    this.#pages.set(pfn, page);
    this.#evictPages();
    return page;
  }

  /** Counts one corrected error on a page; true while the page has no event yet this boot. */
  count(pfn: number, at: number): boolean {
    const page = this.#pages.get(pfn) ?? this.#newPage(pfn, at);
    page.count += 1;
    page.lastAt = Math.max(page.lastAt, at);
    addToHour(page.hourly, at, 1, at);
    return !this.#reported.has(pfn);
  }

  /** Page events made this boot. */
  get made(): number {
    return this.#made;
  }

  /** The page's event is made: later errors on it are only counted. */
  reported(pfn: number): void {
    this.#reported.add(pfn);
    this.#made += 1;
    // A Set iterates in insertion order: the first is the oldest.
    for (const oldest of this.#reported) {
      if (this.#reported.size <= MAX_REPORTED) break;
      this.#reported.delete(oldest);
    }
  }

  /** The hugepage that holds the page, as its event found it. */
  locate(pfn: number, hugepage: { size: HugepageSize; headPfn: string; numaNode?: number | undefined } | undefined): void {
    const page = this.#pages.get(pfn);
    if (page === undefined || hugepage === undefined) return;
    page.hugepage = { size: hugepage.size, headPfn: parseHex(hugepage.headPfn, "hugepage.headPfn"), numaNode: hugepage.numaNode };
  }

  /**
   * The DIMM EDAC located an error on the page at (its mc_event). Kept for a page not counted yet: EDAC
   * decodes the machine check as the kernel logs it, and the agent counts the record only once no verdict
   * followed it, so the DIMM usually comes first. EDAC's label, once known, stays: a later event that
   * could not pin one DIMM does not replace it. True when the ledger changed.
   */
  locateDimm(pfn: number, location: DimmLocation): boolean {
    const dimm = dimmOfLocation(location);
    if (dimm === undefined) return false;
    const page = this.#pages.get(pfn);
    const known =
      page === undefined ? this.#pendingDimms.get(pfn) : page.dimm === undefined ? undefined : { name: page.dimm, byLabel: page.dimmByLabel === true };
    if (known !== undefined && (known.name === dimm.name || (known.byLabel && !dimm.byLabel))) return false;
    if (page !== undefined) {
      Object.assign(page, { dimm: dimm.name, dimmByLabel: dimm.byLabel });
      return true;
    }
    // A Map iterates in insertion order: the first is the one said longest ago.
    this.#pendingDimms.delete(pfn);
    this.#pendingDimms.set(pfn, dimm);
    for (const oldest of this.#pendingDimms.keys()) {
      if (this.#pendingDimms.size <= MAX_PAGES) break;
      this.#pendingDimms.delete(oldest);
    }
    return true;
  }

  /** The kernel retired the page (its collector or our soft offline): the operator must not act on it again. */
  softOfflined(pfn: number, at: number): void {
    const page = this.#pages.get(pfn) ?? this.#newPage(pfn, at);
    page.softOfflined = true;
    page.lastAt = Math.max(page.lastAt, at);
  }

  /** Takes a reading of the EDAC counters: what a DIMM's counter rose by since the last one goes in this hour. */
  readDimms(dimms: readonly EdacDimm[], now: number): void {
    for (const dimm of dimms) {
      const known = this.#dimms.get(dimm.name);
      // A first reading only sets the baseline: those errors came at times nobody knows. A counter that
      // went down was reset (driver reload): everything it says now is new.
      const rise =
        known === undefined ? 0 : dimm.correctedErrors >= known.correctedErrors ? dimm.correctedErrors - known.correctedErrors : dimm.correctedErrors;
      const hourly = known?.hourly ?? [];
      if (rise > 0) addToHour(hourly, now, rise, now);
      this.#dimms.set(dimm.name, {
        name: dimm.name,
        label: dimm.label,
        correctedErrors: dimm.correctedErrors,
        uncorrectedErrors: dimm.uncorrectedErrors,
        hourly,
      });
    }
    if (this.#dimms.size <= MAX_DIMMS) return;
    const kept = keepMostCorrected([...this.#dimms.values()]);
    this.#dimms.clear();
    for (const dimm of kept) this.#dimms.set(dimm.name, dimm);
  }

  #evictPages(): void {
    while (this.#pages.size > MAX_PAGES) {
      const oldest = [...this.#pages.values()].reduce((a, b) => (b.lastAt < a.lastAt ? b : a));
      this.#pages.delete(oldest.pfn);
    }
  }

  /** NodeMemoryHealth spec.correctedErrorPages, pfn order. */
  pages(): NodeMemoryHealthSpecCorrectedErrorPage[] {
    return [...this.#pages.values()]
      .filter((page) => page.count > 0 || page.softOfflined === true)
      .sort((a, b) => a.pfn - b.pfn)
      .map((page) => ({
        pfn: formatPfn(page.pfn),
        ...(page.hugepage && {
          hugepage: {
            size: page.hugepage.size,
            headPfn: formatPfn(page.hugepage.headPfn),
            ...(page.hugepage.numaNode !== undefined && { numaNode: page.hugepage.numaNode }),
          },
        }),
        ...(page.dimm !== undefined && { dimm: page.dimm }),
        // The schema's floor: a page known only as retired counts the error that retired it.
        count: Math.max(1, page.count),
        lastAt: new Date(page.lastAt).toISOString(),
        ...(page.hourly.length > 0 && { hourly: hourlyOut(page.hourly) }),
        ...(page.softOfflined === true && { softOfflined: true }),
      }));
  }

  /** NodeMemoryHealth spec.dimms, in the order EDAC lists them. */
  dimms(): NodeMemoryHealthSpecDimm[] {
    return [...this.#dimms.values()].map(dimmEntry);
  }

  data(): CorrectedLedgerData {
    return {
      pages: [...this.#pages.values()],
      dimms: [...this.#dimms.values()],
      reported: [...this.#reported],
      made: this.#made,
      ...(this.#pendingDimms.size > 0 && { pendingDimms: [...this.#pendingDimms].map(([pfn, dimm]) => ({ pfn, ...dimm })) }),
    };
  }
}
