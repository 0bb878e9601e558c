import { describe, expect, it } from "vitest";
import { addToHour, HOUR_MS as HOUR, hourlyOut, type HourlyCount } from "./hourly.ts";

const T0 = Date.parse("2026-11-25T12:00:00Z");

describe("addToHour", () => {
  it("adds to the hour's bucket, opens a new one in order, and drops hours more than a week old", () => {
    const hourly: HourlyCount[] = [];
    addToHour(hourly, T0 + 10 * 60_000, 3);
    addToHour(hourly, T0 + 50 * 60_000, 2);
    expect(hourly).toEqual([{ hour: T0, count: 5 }]);
    addToHour(hourly, T0 + 2 * HOUR, 1);
    expect(hourly).toEqual([
      { hour: T0, count: 5 },
      { hour: T0 + 2 * HOUR, count: 1 },
    ]);
    addToHour(hourly, T0 + 168 * HOUR, 4);
    expect(hourly).toEqual([
      { hour: T0 + 2 * HOUR, count: 1 },
      { hour: T0 + 168 * HOUR, count: 4 },
    ]);
  });

  it("puts an error read late in its own hour, and counts none after now's hour, none older than a week, none of zero", () => {
    const hourly: HourlyCount[] = [];
    addToHour(hourly, T0 + 3 * HOUR, 1);
    addToHour(hourly, T0 + HOUR, 2, T0 + 3 * HOUR);
    addToHour(hourly, T0 + 5 * HOUR, 7, T0 + 3 * HOUR);
    addToHour(hourly, T0 - 170 * HOUR, 7, T0 + 3 * HOUR);
    addToHour(hourly, T0 + 3 * HOUR, 0);
    expect(hourlyOut(hourly)).toEqual([
      { hour: "2026-11-25T13:00:00.000Z", count: 2 },
      { hour: "2026-11-25T15:00:00.000Z", count: 1 },
    ]);
  });
});
