// rasdaemon's database of EDAC memory-controller events, read only: where EDAC counters are not
// exported (or were reset by a driver reload) it still has the node's corrected-error history, per DIMM and hour.
import { existsSync } from "node:fs";
import { DatabaseSync, type SQLOutputValue } from "node:sqlite";
import { addToHour, HOUR_MS, hourOf, MAX_HOURS, type HourlyCount } from "../crds/hourly.ts";
import { keepMostCorrected } from "./host.ts";

export const RASDAEMON_DB = "var/lib/rasdaemon/ras-mc_event.db";

/** Sum of err_count over corrected mc_event rows; undefined when the database or its table is not there. */
export function rasdaemonCorrectedErrors(path: string): number | undefined {
  if (!existsSync(path)) return undefined;
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { readOnly: true });
    const row = db.prepare("SELECT COALESCE(SUM(err_count), 0) AS n FROM mc_event WHERE err_type = 'Corrected'").get();
    return typeof row?.n === "number" ? row.n : undefined;
  } catch {
    // Locked mid-write, or an older schema without mc_event: try again next time.
    return undefined;
  } finally {
    db?.close();
  }
}

/** rasdaemon's mc_event rows of one location. */
export interface RasdaemonDimm {
  /** mc<mc>/<top>.<middle>.<lower> as EDAC located the events; mc<mc>/noinfo where it could not. */
  name: string;
  /** The label of the location's latest event that had one. */
  label?: string | undefined;
  correctedErrors: number;
  /** Every other err_type (Uncorrected, Fatal, Deferred, Info), as EDAC's ue_count counts them. */
  uncorrectedErrors: number;
  /** Corrected errors per hour of the last MAX_HOURS (the current one included), the hours that had any, oldest first. */
  hourly: HourlyCount[];
}

/** NodeMemoryHealth spec.dimms[].label's maxLength: an event EDAC could not pin to one DIMM names several, joined by " or ". */
const LABEL_MAX = 128;
const LOCATION = "mc, COALESCE(top_layer, -1) AS top, COALESCE(middle_layer, -1) AS mid, COALESCE(lower_layer, -1) AS low";

/**
 * mc_event rows grouped by location, in name order, at most MAX_DIMMS (those with most corrected errors), with the
 * corrected errors per hour of the MAX_HOURS up to `now` (ms). Undefined when the database or its table is not there.
 */
export function rasdaemonDimmErrors(path: string, now: number): RasdaemonDimm[] | undefined {
  if (!existsSync(path)) return undefined;
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { readOnly: true });
    // One snapshot for totals, labels and hours while rasdaemon keeps writing; closing ends it.
    db.exec("BEGIN");
    const dimms = new Map<string, RasdaemonDimm>();
    const dimmOf = (row: Record<string, SQLOutputValue>): RasdaemonDimm | undefined => {
      const mc = row.mc;
      if (typeof mc !== "number") return undefined;
      const name = dimmName(
        mc,
        [row.top, row.mid, row.low].map((layer) => (typeof layer === "number" ? layer : -1)),
      );
      let dimm = dimms.get(name);
      if (dimm === undefined) {
        dimm = { name, correctedErrors: 0, uncorrectedErrors: 0, hourly: [] };
        dimms.set(name, dimm);
      }
      return dimm;
    };
    // Summed in SQL: rasdaemon never prunes mc_event, so it holds every event since it began recording, across boots.
    const totals = db.prepare(
      `SELECT ${LOCATION}, SUM(CASE WHEN err_type = 'Corrected' THEN err_count END) AS corrected, SUM(CASE WHEN err_type <> 'Corrected' THEN err_count END) AS uncorrected FROM mc_event GROUP BY mc, top, mid, low`,
    );
    for (const row of totals.iterate()) {
      const dimm = dimmOf(row);
      if (dimm === undefined) continue;
      // Groups that name alike (every negative layer is unknown) add up.
      dimm.correctedErrors += typeof row.corrected === "number" ? row.corrected : 0;
      dimm.uncorrectedErrors += typeof row.uncorrected === "number" ? row.uncorrected : 0;
    }
    // SQLite gives a bare column of the row MAX() picked: the label of each location's latest labelled event.
    const labels = db.prepare(`SELECT ${LOCATION}, label, MAX(rowid) FROM mc_event WHERE label <> '' GROUP BY mc, top, mid, low`);
    for (const row of labels.iterate()) {
      const dimm = dimmOf(row);
      if (dimm !== undefined && typeof row.label === "string") dimm.label = row.label.trim().slice(0, LABEL_MAX) || undefined;
    }
    const firstHour = hourOf(now) - (MAX_HOURS - 1) * HOUR_MS;
    // timestamp is local time with its UTC offset (at most 14 hours): compared as text a day early, it lets
    // through every row that may be in the window, and parsing decides.
    const since = new Date(firstHour - 24 * HOUR_MS).toISOString().slice(0, 19).replace("T", " ");
    const recent = db.prepare(`SELECT ${LOCATION}, timestamp, err_count FROM mc_event WHERE err_type = 'Corrected' AND timestamp >= ?`);
    for (const row of recent.iterate(since)) {
      const at = typeof row.timestamp === "string" ? parseRasdaemonTimestamp(row.timestamp) : undefined;
      const dimm = dimmOf(row);
      // A row stamped past the current hour (a clock set back since) is in the total, not in an hour to come.
      if (at !== undefined && dimm !== undefined && typeof row.err_count === "number") addToHour(dimm.hourly, at, row.err_count, now);
    }
    return keepMostCorrected([...dimms.values()]);
  } catch {
    // Locked mid-write, or an older schema without mc_event: try again next time.
    return undefined;
  } finally {
    db?.close();
  }
}

/**
 * A location's name. Trailing unknown layers (-1) are left out; an unknown one before a known one stays -1, lest
 * sb_edac's lockstep events (channel unknown, DIMM known: -1.1) take another DIMM's name (1). No layer known: the
 * errors EDAC counts in ce_noinfo_count, named as host.ts names them.
 */
export function dimmName(mc: number, layers: number[]): string {
  const known = layers.map((layer) => (layer < 0 ? -1 : layer));
  while (known.length > 0 && (known.at(-1) ?? -1) < 0) known.pop();
  return known.length === 0 ? `mc${mc}/noinfo` : `mc${mc}/${known.join(".")}`;
}

const TIMESTAMP = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$/;

/** rasdaemon's strftime("%Y-%m-%d %H:%M:%S %z") of local time, as ms since the epoch; undefined for anything else. */
export function parseRasdaemonTimestamp(text: string): number | undefined {
  const m = TIMESTAMP.exec(text.trim());
  if (m === null) return undefined;
  const field = (i: number): number => Number(m[i]);
  const [month, day, hour, minute, second, offset] = [field(2), field(3), field(4), field(5), field(6), field(8) * 60 + field(9)];
  const local = Date.UTC(field(1), month - 1, day, hour, minute, second);
  // Date.UTC rolls 2024-02-30 over into March: a day out of range shows as another month or day.
  const date = new Date(local);
  if (date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day || hour > 23 || minute > 59 || second > 59 || field(9) > 59) return undefined;
  return local - (m[7] === "-" ? -offset : offset) * 60_000;
}
