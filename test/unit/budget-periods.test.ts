import { describe, expect, it } from "vitest";
import { isTimeZone, PeriodClock, periodBounds } from "../../src/security/budget-periods.js";

const at = (iso: string) => Date.parse(iso);
const iso = (b: { start: number; end: number }) => [new Date(b.start).toISOString(), new Date(b.end).toISOString()];

describe("budget periods in a time zone", () => {
  it("UTC: the clock hour, the calendar day and month, month ends and a leap February", () => {
    expect(iso(periodBounds("hour", at("2026-12-06T04:59:59.999Z"), "UTC"))).toEqual(["2026-12-06T04:00:00.000Z", "2026-12-06T05:00:00.000Z"]);
    expect(iso(periodBounds("hour", at("2026-12-06T05:00:00.000Z"), "UTC"))).toEqual(["2026-12-06T05:00:00.000Z", "2026-12-06T06:00:00.000Z"]);
    expect(iso(periodBounds("day", at("2026-12-31T23:59:59Z"), "UTC"))).toEqual(["2026-12-31T00:00:00.000Z", "2027-01-01T00:00:00.000Z"]);
    expect(iso(periodBounds("month", at("2026-12-31T23:59:59Z"), "UTC"))).toEqual(["2026-12-01T00:00:00.000Z", "2027-01-01T00:00:00.000Z"]);
    expect(iso(periodBounds("month", at("2026-01-31T12:00:00Z"), "UTC"))).toEqual(["2026-01-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z"]);
    expect(iso(periodBounds("month", at("2026-02-15T00:00:00Z"), "UTC"))).toEqual(["2026-02-01T00:00:00.000Z", "2026-03-01T00:00:00.000Z"]);
    expect(iso(periodBounds("month", at("2028-02-29T23:00:00Z"), "UTC"))).toEqual(["2028-02-01T00:00:00.000Z", "2028-03-01T00:00:00.000Z"]);
  });

  it("a local day and month: an instant after UTC midnight still in the zone's previous day and month", () => {
    // 2026-03-01T02:00Z is 2026-02-28 21:00 in New York (UTC-5).
    expect(iso(periodBounds("day", at("2026-03-01T02:00:00Z"), "America/New_York"))).toEqual(["2026-02-28T05:00:00.000Z", "2026-03-01T05:00:00.000Z"]);
    expect(iso(periodBounds("month", at("2026-03-01T02:00:00Z"), "America/New_York"))).toEqual(["2026-02-01T05:00:00.000Z", "2026-03-01T05:00:00.000Z"]);
    // 2026-02-28T23:30Z is 2026-03-01 00:30 in Berlin (UTC+1); March ends in summer time (UTC+2).
    expect(iso(periodBounds("month", at("2026-02-28T23:30:00Z"), "Europe/Berlin"))).toEqual(["2026-02-28T23:00:00.000Z", "2026-03-31T22:00:00.000Z"]);
  });

  it("a day across daylight saving time is 23 or 25 hours", () => {
    // Berlin sets its clocks from 02:00 to 03:00 on 2026-03-29.
    const spring = periodBounds("day", at("2026-03-29T12:00:00Z"), "Europe/Berlin");
    expect(iso(spring)).toEqual(["2026-03-28T23:00:00.000Z", "2026-03-29T22:00:00.000Z"]);
    expect(spring.end - spring.start).toBe(23 * 3_600_000);
    // New York sets its clocks from 02:00 back to 01:00 on 2026-11-01.
    const fall = periodBounds("day", at("2026-11-01T12:00:00Z"), "America/New_York");
    expect(iso(fall)).toEqual(["2026-11-01T04:00:00.000Z", "2026-11-02T05:00:00.000Z"]);
    expect(fall.end - fall.start).toBe(25 * 3_600_000);
  });

  it("the repeated hour of a clock set back is two hours, one after the other", () => {
    expect(iso(periodBounds("hour", at("2026-11-01T05:30:00Z"), "America/New_York"))).toEqual(["2026-11-01T05:00:00.000Z", "2026-11-01T06:00:00.000Z"]);
    expect(iso(periodBounds("hour", at("2026-11-01T06:30:00Z"), "America/New_York"))).toEqual(["2026-11-01T06:00:00.000Z", "2026-11-01T07:00:00.000Z"]);
  });

  it("a day that begins in a gap begins when the clock jumps (America/Santiago: 24:00 to 01:00)", () => {
    // Santiago goes from UTC-4 to UTC-3 at 2026-09-06 00:00 local: the day begins at 01:00 (04:00Z).
    expect(iso(periodBounds("day", at("2026-09-06T12:00:00Z"), "America/Santiago"))).toEqual(["2026-09-06T04:00:00.000Z", "2026-09-07T03:00:00.000Z"]);
    expect(iso(periodBounds("day", at("2026-09-06T03:59:59Z"), "America/Santiago"))).toEqual(["2026-09-05T04:00:00.000Z", "2026-09-06T04:00:00.000Z"]);
  });

  it("an hour in a zone offset by half an hour begins at :30 UTC", () => {
    expect(iso(periodBounds("hour", at("2026-02-28T23:10:00Z"), "Asia/Kolkata"))).toEqual(["2026-02-28T22:30:00.000Z", "2026-02-28T23:30:00.000Z"]);
    expect(iso(periodBounds("day", at("2026-02-28T23:10:00Z"), "Asia/Kolkata"))).toEqual(["2026-02-28T18:30:00.000Z", "2026-03-01T18:30:00.000Z"]);
  });

  it("the clock keeps the current period until it leaves it, and gives the one before", () => {
    let now = at("2026-01-31T23:59:59Z");
    const clock = new PeriodClock("UTC", () => now);
    const jan = clock.bounds("month");
    expect(clock.bounds("month")).toBe(jan);
    now = at("2026-02-01T00:00:00Z");
    expect(iso(clock.bounds("month"))).toEqual(["2026-02-01T00:00:00.000Z", "2026-03-01T00:00:00.000Z"]);
    expect(iso(clock.previous("month"))).toEqual(["2026-01-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z"]);
    expect(iso(clock.previous("day"))).toEqual(["2026-01-31T00:00:00.000Z", "2026-02-01T00:00:00.000Z"]);
  });

  it("knows IANA zones and refuses others", () => {
    expect(isTimeZone("Europe/Berlin")).toBe(true);
    expect(isTimeZone("UTC")).toBe(true);
    expect(isTimeZone("Mars/Olympus_Mons")).toBe(false);
  });
});
