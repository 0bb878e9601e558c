// rasdaemon's database of EDAC memory-controller events, read only: where EDAC counters are not
// exported (or were reset by a driver reload) it still has the node's corrected-error history.
import { existsSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";

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
