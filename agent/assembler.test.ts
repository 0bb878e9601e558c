import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ErrorAssembler, type Assembled } from "./assembler.ts";
import type { KernelLine } from "./source.ts";

const line = (text: string, sequence: number, at = 0): KernelLine => ({ source: "kmsg", sequence, text, at });

function feed(assembler: ErrorAssembler, texts: string[], at = 0): Assembled {
  const out: Assembled = { errors: [], notices: [] };
  texts.forEach((text, i) => {
    const step = assembler.push(line(text, i + 1, at));
    out.errors.push(...step.errors);
    out.notices.push(...step.notices);
  });
  return out;
}

describe("ErrorAssembler", () => {
  it("turns the observed 6.1 log into its errors, as the batch assembler does", () => {
    const text = readFileSync(new URL("../kernel/testdata/observed-6.1.dmesg", import.meta.url), "utf8");
    const out = feed(new ErrorAssembler(), text.split("\n"));
    expect(out.errors.map(({ error }) => [error.pfn.toString(16), error.severity, error.source, error.pageType, error.result])).toEqual([
      ["5205", "ActionOptional", "Kmsg", "huge page", "Recovered"],
      ["3e09", "ActionOptional", "Kmsg", "huge page", "Recovered"],
      ["3e11", "ActionOptional", "Kmsg", "huge page", "Recovered"],
      ["4600", "ActionOptional", "Injected", "free huge page", "Recovered"],
      ["4205", "SoftOffline", "Kmsg", undefined, undefined],
      ["100005", "ActionOptional", "Injected", "huge page", "Failed"],
      ["5203", "ActionOptional", "MachineCheck", "huge page", "Recovered"],
    ]);
    expect(out.errors[2]?.error.signalled).toEqual([
      { command: "hwp", pid: 601 },
      { command: "hwp", pid: 602 },
    ]);
    expect(out.errors[6]?.error.lines).toHaveLength(8);
    expect(out.notices.filter((n) => n.kind === "killed-on-access")).toHaveLength(1);
    expect(out.notices.filter((n) => n.kind === "unpoison")).toHaveLength(1);
  });

  it("lets a machine-check record's lines expire together when they were read either side of the age limit", () => {
    const assembler = new ErrorAssembler({ maxAgeMs: 5000 });
    assembler.push(line("mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 9: 9c000000000000c0", 1, 0));
    assembler.push(line("mce: [Hardware Error]: TSC 0 ADDR 144005000 MISC 8c", 2, 600));
    const out = assembler.expire(5000);
    expect(out.errors.map(({ error }) => [error.pfn, error.severity])).toEqual([[0x144005, "Corrected"]]);
    expect(out.notices).toEqual([]);
    expect(assembler.holdBack).toBeUndefined();
  });

  it("keeps a storm of corrected records whole when the hold limit lets lines go, and guesses no severity for a record without its bank line", () => {
    const assembler = new ErrorAssembler({ maxHeld: 256 });
    const errors: Assembled["errors"] = [];
    for (let i = 0; i < 1000; i++) {
      // Odd numbers of lines per record, so the limit falls inside records.
      for (const text of [
        "mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 9: 9c000000000000c0",
        `mce: [Hardware Error]: TSC 0 ADDR ${(0x5203000 + (i % 8) * 0x1000).toString(16)} MISC 8c`,
        "mce: [Hardware Error]: PROCESSOR 0:a0f11 TIME 0 SOCKET 0 APIC 0 microcode 1",
      ])
        errors.push(...assembler.push(line(text, i, 0)).errors);
    }
    errors.push(...assembler.expire(10_000).errors);
    expect(errors).toHaveLength(1000);
    expect(new Set(errors.map(({ error }) => error.severity))).toEqual(new Set(["Corrected"]));
    // The ring overwrote the bank line: the ADDR line alone is no error of any severity.
    const orphan = new ErrorAssembler();
    orphan.push(line("mce: [Hardware Error]: TSC 0 ADDR 144005000 MISC 8c", 1, 0));
    const out = orphan.expire(10_000);
    expect(out.errors).toEqual([]);
    expect(out.notices.map((n) => n.kind)).toEqual(["expired"]);
  });

  it("holds lines of an error in flight and keeps the cursor behind them", () => {
    const assembler = new ErrorAssembler();
    assembler.push(line("6,1,0,-;usb 1-1: new device", 1));
    expect(assembler.holdBack).toBeUndefined();
    const first = assembler.push(line("3,2,0,-;Memory failure: 0x3e09: Sending SIGBUS to hwp:462 due to hardware memory corruption", 2));
    expect(first.errors).toEqual([]);
    expect(assembler.holdBack).toBe(2);
    const second = assembler.push(line("3,3,0,-;Memory failure: 0x3e09: recovery action for huge page: Recovered", 3));
    expect(second.errors[0]?.line.sequence).toBe(3);
    expect(second.errors[0]?.error.lines).toHaveLength(2);
    expect(assembler.holdBack).toBeUndefined();
  });

  it("holds an unhandlable page. line for its verdict: one error, the verdict's words, the cursor kept behind it", () => {
    const assembler = new ErrorAssembler();
    const first = assembler.push(line("3,7,0,-;Memory failure: 0x5205: unhandlable page.", 7));
    expect(first).toEqual({ errors: [], notices: [] });
    expect(assembler.holdBack).toBe(7);
    const verdict = assembler.push(line("3,8,0,-;Memory failure: 0x5205: recovery action for get hwpoison page: Ignored", 8));
    expect(verdict.errors.map(({ error }) => [error.pfn, error.pageType, error.result, error.lines.length])).toEqual([
      [0x5205, "get hwpoison page", "Ignored", 2],
    ]);
    expect(assembler.holdBack).toBeUndefined();
  });

  it("keeps a kill line no verdict followed (an access to a page poisoned before) as a late signal, not an orphan", () => {
    const assembler = new ErrorAssembler({ maxAgeMs: 1000 });
    feed(
      assembler,
      ["Memory failure: 0x5205: already hardware poisoned", "Memory failure: 0x5205: Sending SIGBUS to hwp:462 due to hardware memory corruption"],
      0,
    );
    const out = assembler.expire(1000);
    expect(out.errors).toEqual([]);
    expect(out.notices).toMatchObject([
      { kind: "late-signal", pfn: 0x5205, pid: 462, command: "hwp" },
      { kind: "expired", lines: [{ text: "Memory failure: 0x5205: already hardware poisoned" }] },
    ]);
  });

  it("keeps the errors of interleaved pfns apart", () => {
    const out = feed(new ErrorAssembler(), [
      "Memory failure: 0x1000: Sending SIGBUS to a:1 due to hardware memory corruption",
      "Memory failure: 0x2000: Sending SIGBUS to b:2 due to hardware memory corruption",
      "Memory failure: 0x2000: recovery action for huge page: Recovered",
      "Memory failure: 0x1000: recovery action for huge page: Recovered",
    ]);
    expect(out.errors.map(({ error }) => [error.pfn, error.signalled.map((s) => s.pid)])).toEqual([
      [0x2000, [2]],
      [0x1000, [1]],
    ]);
  });

  it("reports a corrected machine check no verdict follows, once it is old", () => {
    const assembler = new ErrorAssembler({ maxAgeMs: 1000 });
    feed(
      assembler,
      [
        "mce: [Hardware Error]: Machine check events logged",
        "mce: [Hardware Error]: CPU 1: Machine Check: 0 Bank 7: 9c00004001010091",
        "mce: [Hardware Error]: TSC 0 ADDR 1234000 MISC 8c",
      ],
      0,
    );
    expect(assembler.expire(999).errors).toEqual([]);
    const out = assembler.expire(1000);
    expect(out.errors.map(({ error }) => [error.pfn, error.severity, error.source, error.physicalAddress])).toEqual([
      [0x1234, "Corrected", "MachineCheck", 0x1234000],
    ]);
    expect(assembler.holdBack).toBeUndefined();
  });

  describe("a machine check the kernel logged as it booted (issue 15.6)", () => {
    // A fatal record the banks kept across the reset, as the boot-time poll prints it (TSC 0, no
    // "Exception"), then free_initmem's line: /dev/kmsg headers carry the uptime in microseconds.
    const bootLog = (recordAtUsec: number, bootDoneAtUsec: number): string[] => [
      `6,310,${recordAtUsec},-;mce: [Hardware Error]: Machine check events logged`,
      `0,311,${recordAtUsec},-;mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 9: be00000000800400`,
      `0,312,${recordAtUsec},-;mce: [Hardware Error]: TSC 0 ADDR 5203000 MISC 8c`,
      `0,313,${recordAtUsec},-;mce: [Hardware Error]: PROCESSOR 0:60fb1 TIME 1795644070 SOCKET 0 APIC 0 microcode 1`,
      `6,420,${bootDoneAtUsec},-;Freeing unused kernel image (initmem) memory: 2712K`,
    ];

    it("marks a record logged before the kernel ran init: the error is from an earlier boot", () => {
      const assembler = new ErrorAssembler({ maxAgeMs: 1000 });
      feed(assembler, bootLog(1_912_345, 2_504_000));
      const out = assembler.expire(1000);
      expect(out.errors.map(({ error }) => [error.pfn, error.severity, error.loggedAtBoot])).toEqual([[0x5203, "Fatal", true]]);
    });

    it("does not mark a record logged after the boot finished", () => {
      const assembler = new ErrorAssembler({ maxAgeMs: 1000 });
      const [logged, bank, address, processor, bootDone] = bootLog(912_000_000, 2_504_000);
      feed(assembler, [bootDone ?? "", logged ?? "", bank ?? "", address ?? "", processor ?? ""]);
      expect(assembler.expire(1000).errors.map(({ error }) => error.loggedAtBoot)).toEqual([undefined]);
    });

    it("marks nothing when the log never said when the boot finished (the agent started past it)", () => {
      const assembler = new ErrorAssembler({ maxAgeMs: 1000 });
      feed(assembler, bootLog(1_912_345, 2_504_000).slice(0, 4));
      expect(assembler.expire(1000).errors.map(({ error }) => error.loggedAtBoot)).toEqual([undefined]);
    });

    it("reads every era's words for the end of the boot, and printk time as well as kmsg headers", () => {
      const assembler = new ErrorAssembler({ maxAgeMs: 1000 });
      feed(assembler, [
        "[    3.101000] mce: [Hardware Error]: CPU 2: Machine Check: 0 Bank 8: be00000000800400",
        "[    3.101000] mce: [Hardware Error]: TSC 0 ADDR 7fe01000 MISC 8c",
        "[    4.250011] Freeing unused kernel memory: 1616K",
      ]);
      expect(assembler.expire(1000).errors.map(({ error }) => [error.pfn, error.loggedAtBoot])).toEqual([[0x7fe01, true]]);
    });
  });

  it("lets orphan lines go with a notice once they are old", () => {
    const assembler = new ErrorAssembler({ maxAgeMs: 1000 });
    feed(assembler, ["Memory failure: 0x1000: failed to unmap page (folio mapcount=2)"]);
    const out = assembler.expire(5000);
    expect(out.errors).toEqual([]);
    expect(out.notices).toMatchObject([{ kind: "expired" }]);
  });

  it("bounds what it holds", () => {
    const assembler = new ErrorAssembler({ maxHeld: 2 });
    const out = feed(
      assembler,
      [1, 2, 3].map((n) => `Memory failure: 0x${n}000: failed to unmap page (folio mapcount=${n})`),
    );
    expect(out.notices).toMatchObject([{ kind: "expired", lines: [{ sequence: 1 }] }]);
    expect(assembler.holdBack).toBe(2);
  });

  it("reports a line that looks like ours but fits no shape", () => {
    const out = feed(new ErrorAssembler(), ["Memory failure: 0x5205: something new the kernel says"]);
    expect(out.notices).toMatchObject([{ kind: "unrecognized" }]);
    expect(out.errors).toEqual([]);
  });

  it("reads tracefs lines", () => {
    const text = readFileSync(new URL("../kernel/testdata/trace_pipe.txt", import.meta.url), "utf8");
    const assembler = new ErrorAssembler({ maxAgeMs: 0 });
    const out = feed(assembler, text.split("\n"));
    expect(out.errors.map(({ error }) => [error.pfn.toString(16), error.source])).toEqual([
      ["5203", "MachineCheck"],
      ["5003", "Tracefs"],
    ]);
  });
});

describe("EDAC's mc_event (issue 14)", () => {
  const trace = (text: string, sequence: number): KernelLine => ({ source: "tracefs", sequence, text, at: 0 });

  it("tells the page's DIMM as a notice, holds nothing and leaves the machine check it decodes an error of its own", () => {
    const assembler = new ErrorAssembler({ maxAgeMs: 1000 });
    const lines = [
      "  kworker/0:0-8  [000] d..1.  50.100000: mce_record: CPU: 0, MCGc/s: 1000c14/0, MC7: 8c00004000010091, ADDR/MISC: 0000000849923380/0000000042525286, RIP: 00:<0000000000000000>",
      "  kworker/0:2-31 [000] .....  50.100100: mc_event: 1 Corrected error: memory read error on CPU_SrcID#0_Ha#0_Chan#2_DIMM#0 (mc:0 location:2:0:-1 address:0x849923380 grain:32 syndrome:0x00000000  area:DRAM err_code:0001:0091 socket:0 ha:0 channel_mask:4 rank:0)",
      // No address: nothing to say about a page.
      "  kworker/0:2-31 [000] .....  50.100200: mc_event: 1 Corrected error: memory read error on any memory (mc:1 location:-1:-1:-1 address:0x00000000 grain:1 syndrome:0x00000000)",
    ];
    const steps = lines.map((text, i) => assembler.push(trace(text, i + 1)));
    expect(steps[0]).toEqual({ errors: [], notices: [] });
    expect(steps[1]?.errors).toEqual([]);
    expect(steps[1]?.notices).toMatchObject([
      { kind: "dimm-of-page", pfn: 0x849923, label: "CPU_SrcID#0_Ha#0_Chan#2_DIMM#0", mc: 0, layers: [2, 0, -1], errorType: "Corrected", count: 1 },
    ]);
    expect(steps[2]).toEqual({ errors: [], notices: [] });
    // Only the machine check is held: the cursor waits for it, not for the mc_event lines.
    expect(assembler.holdBack).toBe(1);
    const out = assembler.expire(1000);
    expect(out.errors.map(({ error }) => [error.pfn, error.severity, error.lines.length])).toEqual([[0x849923, "Corrected", 1]]);
    expect(out.notices).toEqual([]);
  });

  it("does not split a kmsg machine-check record it falls inside", () => {
    const assembler = new ErrorAssembler({ maxAgeMs: 1000 });
    const out = feed(assembler, [
      "mce: [Hardware Error]: CPU 1: Machine Check: 0 Bank 7: 9c00004001010091",
      "mc_event: 1 Corrected error: on A1 (mc:0 location:0:0:-1 address:0x1234040 grain:64 syndrome:0x00000000)",
      "mce: [Hardware Error]: TSC 0 ADDR 1234040 MISC 8c",
    ]);
    expect(out.notices.map((n) => [n.kind, "pfn" in n ? n.pfn : undefined])).toEqual([["dimm-of-page", 0x1234]]);
    expect(assembler.expire(1000).errors.map(({ error }) => [error.pfn, error.severity, error.lines.length])).toEqual([[0x1234, "Corrected", 2]]);
  });

  it("reports an mc_event line it cannot read", () => {
    const out = feed(new ErrorAssembler(), ["mc_event: 1 Corrected error: memory read error on A1"]);
    expect(out.notices).toMatchObject([{ kind: "unrecognized", reason: expect.stringContaining("mc_event") as unknown }]);
  });
});

describe("machine-check records expiring together (issue 18.1)", () => {
  it("makes one error per record, each with its own address and severity", () => {
    const assembler = new ErrorAssembler({ maxAgeMs: 1000 });
    feed(
      assembler,
      [
        "mce: [Hardware Error]: Machine check events logged",
        "mce: [Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 9: bd000000000000c0",
        "mce: [Hardware Error]: TSC 0 ADDR 6405000 MISC 8c",
        "mce: [Hardware Error]: CPU 1: Machine Check: 0 Bank 7: 9c00004001010090",
        "mce: [Hardware Error]: TSC 0 ADDR 6605000 MISC 8c",
      ],
      0,
    );
    const out = assembler.expire(1000);
    expect(out.errors.map(({ error }) => [error.pfn, error.severity, error.lines.length])).toEqual([
      [0x6405, "ActionOptional", 3],
      [0x6605, "Corrected", 2],
    ]);
    expect(out.notices).toEqual([]);
  });
});
