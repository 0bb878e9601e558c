import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { bootFinishedAt, decodeMciStatus, isKmsgDictionaryLine, mceSeverity, parseKernelLine, parseKernelLog, stripLogPrefix, uptimeUsec } from "./lines.ts";
import type { KernelEra, KernelLineResult, KernelRecord, MceSeverity, MciStatus, StrippedLine } from "./lines.ts";
import { formatPfn, MAX_PFN } from "./pfn.ts";

function recordOf(line: string): KernelRecord {
  const result = parseKernelLine(line);
  if (result.kind !== "record") throw new Error(`no record from ${JSON.stringify(line)}: ${JSON.stringify(result)}`);
  return result.record;
}

function testdata(name: string): string {
  return readFileSync(new URL(`testdata/${name}`, import.meta.url), "utf8");
}

const MCE_RECORD_6_1 =
  "mce_record: CPU: 0, MCGc/s: 100010a/5, MC9: bd000000000000c0, IPID: 0000000000000000, ADDR/MISC/SYND: 0000000005203000/000000000000008c/0000000000000000, RIP: 10:<ffffffffac4592eb>, ...";

// Every line kernel-facts.md quotes (Verbatim lines with values filled in, the observed-outcomes
// log column, the trace output), and what it must read as.
const KERNEL_FACTS: [string, KernelRecord][] = [
  [
    "Memory failure: 0x5205: recovery action for huge page: Recovered",
    { type: "recovery", pfn: 0x5205, pageType: "huge page", result: "Recovered", era: "4.13+", source: "printk" },
  ],
  [
    "Memory failure: 0x3e09: Sending SIGBUS to hwp:462 due to hardware memory corruption",
    { type: "signal-sent", pfn: 0x3e09, command: "hwp", pid: 462, era: "4.13+" },
  ],
  [
    "Memory failure: 0x3e09: forcibly killing hwp:462 because of failure to unmap corrupted page",
    { type: "forcibly-killed", pfn: 0x3e09, command: "hwp", pid: 462, era: "4.13+" },
  ],
  [
    "Memory failure: 0x3e09: Cannot send advisory machine check signal to hwp:462",
    { type: "advisory-failed", pfn: 0x3e09, command: "hwp", pid: 462, era: "4.13+" },
  ],
  ["Memory failure: 0x3e09: failed to unmap page (folio mapcount=2)", { type: "unmap-failed", pfn: 0x3e09, mapcount: 2, era: "4.13+" }],
  ["Memory failure: 0x3e09: unhandlable page.", { type: "unhandlable", pfn: 0x3e09, era: "4.13+" }],
  ["Memory failure: 0x3e09: memory outside kernel control", { type: "outside-kernel-control", pfn: 0x3e09, era: "4.13+" }],
  [
    "MCE: Killing hwp:125 due to hardware memory corruption fault at 7f56bd805000",
    { type: "killed-on-access", command: "hwp", pid: 125, virtualAddress: 0x7f56bd805000 },
  ],
  ["Injecting memory failure for pfn 0x100005 at process virtual address 0x7f0040000000", { type: "injected", pfn: 0x100005, virtualAddress: 0x7f0040000000 }],
  ["Injecting memory failure at pfn 0x4600", { type: "injected", pfn: 0x4600 }],
  ["Soft offlining pfn 0x4205 at process virtual address 0x7f2cec605000", { type: "soft-offline", pfn: 0x4205, virtualAddress: 0x7f2cec605000, failed: false }],
  // The corrected-errors collector (6.12, measured under QEMU) at its threshold.
  ["RAS: Soft-offlining pfn: 0x5203", { type: "soft-offline", pfn: 0x5203, failed: false, byCollector: true }],
  ["Unpoison: Software-unpoisoned page 0x4407", { type: "unpoison", pfn: 0x4407, done: true, detail: "Software-unpoisoned page 0x4407" }],
  ["mce: [Hardware Error]: Machine check events logged", { type: "mce-logged" }],
  [
    "mce: [Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 9: bd000000000000c0",
    { type: "mce-detail", field: "machine-check", cpu: 0, mcgStatus: "5", bank: 9, status: "bd000000000000c0", exception: true, severity: "action-optional" },
  ],
  [
    "mce: [Hardware Error]: RIP !INEXACT! 10:<ffffffffac4592eb> {native_safe_halt+0xb/0x10}",
    { type: "mce-detail", field: "rip", text: "!INEXACT! 10:<ffffffffac4592eb> {native_safe_halt+0xb/0x10}" },
  ],
  [
    "mce: [Hardware Error]: TSC 3ed904d41 ADDR 5203000 MISC 8c",
    { type: "mce-detail", field: "tsc", tsc: "3ed904d41", address: "5203000", misc: "8c", physicalAddress: 0x5203000, pfn: 0x5203 },
  ],
  [
    "mce: [Hardware Error]: PROCESSOR 0:60fb1 TIME 1795644070 SOCKET 0 APIC 0 microcode 1",
    { type: "mce-detail", field: "processor", text: "0:60fb1 TIME 1795644070 SOCKET 0 APIC 0 microcode 1" },
  ],
  [
    "Memory failure: 0x4600: recovery action for free huge page: Recovered",
    { type: "recovery", pfn: 0x4600, pageType: "free huge page", result: "Recovered", era: "4.13+", source: "printk" },
  ],
  [
    "Memory failure: 0x100005: recovery action for huge page: Failed",
    { type: "recovery", pfn: 0x100005, pageType: "huge page", result: "Failed", era: "4.13+", source: "printk" },
  ],
  [
    MCE_RECORD_6_1,
    {
      type: "mce-record",
      cpu: 0,
      bank: 9,
      status: "bd000000000000c0",
      address: "0000000005203000",
      misc: "000000000000008c",
      physicalAddress: 0x5203000,
      pfn: 0x5203,
      severity: "action-optional",
    },
  ],
  [
    "memory_failure_event: pfn 0x5203: recovery action for huge page: Recovered",
    { type: "recovery", pfn: 0x5203, pageType: "huge page", result: "Recovered", era: "4.13+", source: "tracefs" },
  ],
  [
    "memory_failure_event: pfn 0x5003: recovery action for free huge page: Recovered",
    { type: "recovery", pfn: 0x5003, pageType: "free huge page", result: "Recovered", era: "4.13+", source: "tracefs" },
  ],
];

// Line shapes of other eras and paths (kernel-facts.md, "Other kernels").
const ERAS: [string, KernelRecord][] = [
  ["MCE 0x23a200: huge page recovery: Delayed", { type: "recovery", pfn: 0x23a200, pageType: "huge", result: "Delayed", era: "2.6-3.x", source: "printk" }],
  [
    "MCE 0x1234: free buddy, 2nd try page recovery: Delayed",
    { type: "recovery", pfn: 0x1234, pageType: "free buddy, 2nd try", result: "Delayed", era: "2.6-3.x", source: "printk" },
  ],
  [
    "MCE 0x1234: dirty LRU page recovery: Recovered",
    { type: "recovery", pfn: 0x1234, pageType: "dirty LRU", result: "Recovered", era: "2.6-3.x", source: "printk" },
  ],
  ["MCE 0x1234: Killing hwp:462 early due to hardware memory corruption", { type: "signal-sent", pfn: 0x1234, command: "hwp", pid: 462, era: "2.6-3.x" }],
  ["MCE 0x1234: Killing hwp:462 due to hardware memory corruption", { type: "signal-sent", pfn: 0x1234, command: "hwp", pid: 462 }],
  ["MCE 0x1234: forcibly killing hwp:462 because of failure to unmap corrupted page", { type: "forcibly-killed", pfn: 0x1234, command: "hwp", pid: 462 }],
  ["MCE 0x1234: failed to unmap page (mapcount=1)", { type: "unmap-failed", pfn: 0x1234, mapcount: 1 }],
  [
    "MCE 0x1234: recovery action for huge page: Recovered",
    { type: "recovery", pfn: 0x1234, pageType: "huge page", result: "Recovered", era: "4.1-4.12", source: "printk" },
  ],
  ["Memory failure: 0x1234: Killing hwp:462 due to hardware memory corruption", { type: "signal-sent", pfn: 0x1234, command: "hwp", pid: 462, era: "4.13+" }],
  ["Memory failure: 0x1234: failed to unmap page (mapcount=1)", { type: "unmap-failed", pfn: 0x1234, mapcount: 1, era: "4.13+" }],
  [
    "0x1234: recovery action for huge page: Recovered",
    { type: "recovery", pfn: 0x1234, pageType: "huge page", result: "Recovered", era: "4.13+", source: "printk" },
  ],
  ["0x1234: Sending SIGBUS to hwp:462 due to hardware memory corruption", { type: "signal-sent", pfn: 0x1234, command: "hwp", pid: 462, era: "4.13+" }],
  ["Injecting memory failure for page 23a200 at 7f0040000000", { type: "injected", pfn: 0x23a200, virtualAddress: 0x7f0040000000 }],
  ["Injecting memory failure at pfn 23a000", { type: "injected", pfn: 0x23a000 }],
  ["Soft offlining page 4205 at 7f2cec605000", { type: "soft-offline", pfn: 0x4205, virtualAddress: 0x7f2cec605000, failed: false }],
  ["MCE: Software-unpoisoned page 0x23a000", { type: "unpoison", pfn: 0x23a000, done: true, detail: "Software-unpoisoned page 0x23a000" }],
  ["MCE: Software-unpoisoned free page 0x23a000", { type: "unpoison", pfn: 0x23a000, done: true, detail: "Software-unpoisoned free page 0x23a000" }],
  ["MCE: Memory failure is now running on 0x23a200", { type: "unpoison", pfn: 0x23a200, done: false, detail: "Memory failure is now running on 0x23a200" }],
  ["Unpoison: Software-unpoisoned free page 0x4407", { type: "unpoison", pfn: 0x4407, done: true, detail: "Software-unpoisoned free page 0x4407" }],
  ["Unpoison: Page was already unpoisoned 0x4407", { type: "unpoison", pfn: 0x4407, done: false, detail: "Page was already unpoisoned 0x4407" }],
  ["Unpoison: Someone grabs the hwpoison page 0x4407", { type: "unpoison", pfn: 0x4407, done: false, detail: "Someone grabs the hwpoison page 0x4407" }],
  ["Unpoison: Disabled after HW memory failure 0x4407", { type: "unpoison", pfn: 0x4407, done: false, detail: "Disabled after HW memory failure 0x4407" }],
  ["Unpoison: THP not supported", { type: "unpoison", done: false, detail: "THP not supported" }],
  ["Memory failure: Unpoison: Software-unpoisoned page 0x4407", { type: "unpoison", pfn: 0x4407, done: true, detail: "Software-unpoisoned page 0x4407" }],
  [
    "soft offline: 0x1234: hugepage isolation failed, page count 2, type 0x57ffffc000800e(referenced|uptodate|dirty|head)",
    {
      type: "soft-offline",
      pfn: 0x1234,
      detail: "hugepage isolation failed, page count 2, type 0x57ffffc000800e(referenced|uptodate|dirty|head)",
      failed: true,
    },
  ],
  ["soft offline: 0x1234 page already poisoned", { type: "soft-offline", pfn: 0x1234, detail: "page already poisoned", failed: true }],
  ["soft offline: 0x1234 hugepage already poisoned", { type: "soft-offline", pfn: 0x1234, detail: "hugepage already poisoned", failed: true }],
  [
    "soft offline: 0x1234: migration failed 1, type 57ffffc000800e",
    { type: "soft-offline", pfn: 0x1234, detail: "migration failed 1, type 57ffffc000800e", failed: true },
  ],
  [
    "soft offline: 0x1234: isolation failed: 1, page count 2, type 57ffffc000800e (referenced|uptodate|dirty|head)",
    { type: "soft-offline", pfn: 0x1234, detail: "isolation failed: 1, page count 2, type 57ffffc000800e (referenced|uptodate|dirty|head)", failed: true },
  ],
  ["soft_offline: 0x1234: invalidated", { type: "soft-offline", pfn: 0x1234, detail: "invalidated", failed: false }],
  ["soft_offline_page: 0x1234 page already poisoned", { type: "soft-offline", pfn: 0x1234, detail: "page already poisoned", failed: true }],
  ["Soft offline: 0x1234: thp split failed", { type: "soft-offline", pfn: 0x1234, detail: "thp split failed", failed: true }],
  ["Memory failure: soft offline: 0x1234 page already poisoned", { type: "soft-offline", pfn: 0x1234, detail: "page already poisoned", failed: true }],
  ["soft offline: 0x1234", { type: "soft-offline", pfn: 0x1234, failed: false }],
  [
    "mce: [Hardware Error]: CPU 3: Machine Check: 0 Bank 7: 9c000040000800c0",
    { type: "mce-detail", field: "machine-check", cpu: 3, mcgStatus: "0", bank: 7, status: "9c000040000800c0", exception: false, severity: "corrected" },
  ],
  [
    "[Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 9: bd000000000000c0",
    { type: "mce-detail", field: "machine-check", cpu: 0, mcgStatus: "5", bank: 9, status: "bd000000000000c0", exception: true, severity: "action-optional" },
  ],
  ["[Hardware Error]: Machine check events logged", { type: "mce-logged" }],
  ["mce: [Hardware Error]: TSC 0", { type: "mce-detail", field: "tsc", tsc: "0" }],
  [
    "mce: [Hardware Error]: TSC 3ed904d41 ADDR 5203000 MISC 8c PPIN 1234abcd SYND 5 IPID 300b000000000",
    { type: "mce-detail", field: "tsc", tsc: "3ed904d41", address: "5203000", misc: "8c", physicalAddress: 0x5203000, pfn: 0x5203 },
  ],
  ["mce: [Hardware Error]: RIP 33:<00007f56bd805000>", { type: "mce-detail", field: "rip", text: "33:<00007f56bd805000>" }],
  ["mce: [Hardware Error]: Machine check: Processor context corrupt", { type: "mce-detail", field: "panic", text: "Processor context corrupt" }],
  ["mce: [Hardware Error]: Run the above through 'mcelog --ascii'", { type: "mce-detail", field: "note", text: "Run the above through 'mcelog --ascii'" }],
  [
    "mce_record: CPU: 0, MCGc/s: 100010a/5, MC9: bd000000000000c0, ADDR/MISC: 0000000005203000/000000000000008c, RIP: 10:<ffffffffac4592eb>, TSC: 3ed904d41, PROCESSOR: 0:60fb1, TIME: 1795644070, SOCKET: 0, APIC: 0",
    {
      type: "mce-record",
      cpu: 0,
      bank: 9,
      status: "bd000000000000c0",
      address: "0000000005203000",
      misc: "000000000000008c",
      physicalAddress: 0x5203000,
      pfn: 0x5203,
      severity: "action-optional",
    },
  ],
  [
    "mce_record: CPU: 2, MCGc/s: 100010a/5, MC9: bd000000000000c0, IPID: 0000000000000000, ADDR: 0000000005203000, MISC: 000000000000008c, SYND: 0000000000000000, RIP: 10:<ffffffffac4592eb>",
    {
      type: "mce-record",
      cpu: 2,
      bank: 9,
      status: "bd000000000000c0",
      address: "0000000005203000",
      misc: "000000000000008c",
      physicalAddress: 0x5203000,
      pfn: 0x5203,
      severity: "action-optional",
    },
  ],
  // ADDRV clear: the address field is noise and must not become a pfn.
  [
    "mce_record: CPU: 1, MCGc/s: 100010a/0, MC7: 9000004000010090, ADDR/MISC/SYND: 0000000012345000/0000000000000000/0000000000000000, RIP: 00:<0000000000000000>",
    { type: "mce-record", cpu: 1, bank: 7, status: "9000004000010090", address: "0000000012345000", misc: "0000000000000000", severity: "corrected" },
  ],
];

// EDAC's ras:mc_event as trace_pipe prints it (include/ras/ras_event.h, the same TP_printk from 3.6 to 6.18):
// skx_edac and sb_edac (detail after two spaces: the driver's own begins with one), amd64_edac (no message,
// no detail), several labels when EDAC could not pin one DIMM, and ghes_edac without an address.
const MC_EVENTS: [string, KernelRecord][] = [
  [
    "     kworker/3:1-219     [003] d..1.  5121.436741: mc_event: 1 Corrected error: memory read error on CPU_SrcID#1_MC#1_Chan#1_DIMM#0 (mc:3 location:1:0:-1 address:0x6d62de7fc0 grain:32 syndrome:0x00000000  err_code:0x0101:0x0091 socket:1 imc:1 rank:0 bg:1 ba:3 row:0x16e27 col:0x3f8)",
    {
      type: "mc-event",
      errorType: "Corrected",
      count: 1,
      message: "memory read error",
      label: "CPU_SrcID#1_MC#1_Chan#1_DIMM#0",
      mc: 3,
      layers: [1, 0, -1],
      address: "6d62de7fc0",
      physicalAddress: 0x6d62de7fc0,
      pfn: 0x6d62de7,
      grain: 32,
      syndrome: "00000000",
      detail: "err_code:0x0101:0x0091 socket:1 imc:1 rank:0 bg:1 ba:3 row:0x16e27 col:0x3f8",
    },
  ],
  [
    "   kworker/0:2-31    [000] ....  1045.592493: mc_event: 1 Corrected error: memory scrubbing error on CPU_SrcID#0_Ha#0_Chan#2_DIMM#0 (mc:0 location:2:0:-1 address:0x849923380 grain:32 syndrome:0x00000000  area:DRAM err_code:0008:00c2 socket:0 ha:0 channel_mask:4 rank:0)",
    {
      type: "mc-event",
      errorType: "Corrected",
      count: 1,
      message: "memory scrubbing error",
      label: "CPU_SrcID#0_Ha#0_Chan#2_DIMM#0",
      mc: 0,
      layers: [2, 0, -1],
      address: "849923380",
      physicalAddress: 0x849923380,
      pfn: 0x849923,
      grain: 32,
      syndrome: "00000000",
      detail: "area:DRAM err_code:0008:00c2 socket:0 ha:0 channel_mask:4 rank:0",
    },
  ],
  [
    "mc_event: 1 Corrected error: on mc#0csrow#2channel#0 (mc:0 location:2:0:-1 address:0x7f3a1c2e40 grain:64 syndrome:0x0000c1e3)",
    {
      type: "mc-event",
      errorType: "Corrected",
      count: 1,
      message: "",
      label: "mc#0csrow#2channel#0",
      mc: 0,
      layers: [2, 0, -1],
      address: "7f3a1c2e40",
      physicalAddress: 0x7f3a1c2e40,
      pfn: 0x7f3a1c2,
      grain: 64,
      syndrome: "0000c1e3",
    },
  ],
  [
    "  kworker/u64:1-812   [007] d..1.   88.100200: mc_event: 3 Corrected errors: memory read error on CPU_SrcID#0_Ha#0_Chan#0_DIMM#0 or CPU_SrcID#0_Ha#0_Chan#1_DIMM#0 (mc:0 location:-1:0:-1 address:0x1234567040 grain:64 syndrome:0x00000000  area:DRAM err_code:0001:0090 socket:0 ha:0 channel_mask:3 rank:0)",
    {
      type: "mc-event",
      errorType: "Corrected",
      count: 3,
      message: "memory read error",
      label: "CPU_SrcID#0_Ha#0_Chan#0_DIMM#0 or CPU_SrcID#0_Ha#0_Chan#1_DIMM#0",
      mc: 0,
      layers: [-1, 0, -1],
      address: "1234567040",
      physicalAddress: 0x1234567040,
      pfn: 0x1234567,
      grain: 64,
      syndrome: "00000000",
      detail: "area:DRAM err_code:0001:0090 socket:0 ha:0 channel_mask:3 rank:0",
    },
  ],
  // No address (the driver did not have one): nothing to attribute a page by.
  [
    "mc_event: 1 Corrected error: Single-bit ECC on unknown memory (mc:0 location:-1:-1:-1 address:0x00000000 grain:1 syndrome:0x00000000 APEI location: node:0 card:0 module:0 status(0x0000000000000400): Storage error in DRAM memory)",
    {
      type: "mc-event",
      errorType: "Corrected",
      count: 1,
      message: "Single-bit ECC",
      label: "unknown memory",
      mc: 0,
      layers: [-1, -1, -1],
      grain: 1,
      syndrome: "00000000",
      detail: "APEI location: node:0 card:0 module:0 status(0x0000000000000400): Storage error in DRAM memory",
    },
  ],
  [
    "mc_event: 1 Uncorrected error: memory read error on any memory (mc:1 location:-1:-1:-1 address:0x00000000 grain:1 syndrome:0x00000000)",
    {
      type: "mc-event",
      errorType: "Uncorrected",
      count: 1,
      message: "memory read error",
      label: "any memory",
      mc: 1,
      layers: [-1, -1, -1],
      grain: 1,
      syndrome: "00000000",
    },
  ],
  [
    "mc_event: 1 Deferred error: on DIMM_B2 (mc:1 location:0:1:-1 address:0x2f00001000 grain:64 syndrome:0x00000000 recoverable)",
    {
      type: "mc-event",
      errorType: "Deferred",
      count: 1,
      message: "",
      label: "DIMM_B2",
      mc: 1,
      layers: [0, 1, -1],
      address: "2f00001000",
      physicalAddress: 0x2f00001000,
      pfn: 0x2f00001,
      grain: 64,
      syndrome: "00000000",
      detail: "recoverable",
    },
  ],
];

describe("parseKernelLine", () => {
  it.each(KERNEL_FACTS)("reads kernel-facts.md line %s", (line, record) => {
    expect(recordOf(line)).toEqual(record);
  });

  it.each(ERAS)("reads %s", (line, record) => {
    expect(recordOf(line)).toEqual(record);
  });

  it.each(MC_EVENTS)("reads EDAC's mc_event %s", (line, record) => {
    expect(recordOf(line)).toEqual(record);
  });

  it.each<[string, KernelEra | undefined]>([
    ["MCE 0x1: huge page recovery: Delayed", "2.6-3.x"],
    ["MCE 0x1: Killing a:1 early due to hardware memory corruption", "2.6-3.x"],
    ["MCE 0x1: recovery action for huge page: Recovered", "4.1-4.12"],
    ["Memory failure: 0x1: recovery action for huge page: Recovered", "4.13+"],
    ["0x1: recovery action for huge page: Recovered", "4.13+"],
    ["memory_failure_event: pfn 0x1: recovery action for huge page: Recovered", "4.13+"],
    // Printed from 3.x to 4.12 under "MCE ": the line alone cannot say which.
    ["MCE 0x1: Killing a:1 due to hardware memory corruption", undefined],
    ["MCE 0x1: Cannot send advisory machine check signal to a:1", undefined],
  ])("dates %s to %s", (line, era) => {
    const record = recordOf(line);
    expect("era" in record ? record.era : "no era field").toBe(era);
  });

  it("keeps the message without its prefix as text", () => {
    expect(parseKernelLine("[   12.345678] Memory failure: 0x5205: recovery action for huge page: Recovered")).toMatchObject({
      kind: "record",
      text: "Memory failure: 0x5205: recovery action for huge page: Recovered",
    });
  });

  describe("process names", () => {
    it.each<[string, string, number]>([
      ["Memory failure: 0x1: Sending SIGBUS to my app:462 due to hardware memory corruption", "my app", 462],
      ["Memory failure: 0x1: Sending SIGBUS to a:b:c:9 due to hardware memory corruption", "a:b:c", 9],
      ["Memory failure: 0x1: Sending SIGBUS to kworker/u8:1:77 due to hardware memory corruption", "kworker/u8:1", 77],
      ["Memory failure: 0x1: Sending SIGBUS to :1:2 due to hardware memory corruption", ":1", 2],
      ["Memory failure: 0x1: forcibly killing x: y:3 because of failure to unmap corrupted page", "x: y", 3],
      ["Memory failure: 0x1: Cannot send advisory machine check signal to db writer:12:5", "db writer:12", 5],
      ["MCE: Killing qemu-kvm: vcpu0:4242 due to hardware memory corruption fault at 7f0040201000", "qemu-kvm: vcpu0", 4242],
      ["MCE 0x1: Killing ora pmon:1 early due to hardware memory corruption", "ora pmon", 1],
    ])("%s names %j pid %d", (line, command, pid) => {
      expect(recordOf(line)).toMatchObject({ command, pid });
    });
  });

  describe("page-type and result words", () => {
    const CURRENT = [
      "reserved kernel page",
      "high-order kernel page",
      "huge page",
      "free huge page",
      "get hwpoison page",
      "unmapping failed page",
      "dirty swapcache page",
      "clean swapcache page",
      "dirty mlocked LRU page",
      "clean mlocked LRU page",
      "dirty unevictable LRU page",
      "clean unevictable LRU page",
      "dirty LRU page",
      "clean LRU page",
      "already truncated LRU page",
      "free buddy page",
      "dax page",
      "unsplit thp",
      "already poisoned page",
      "unknown page",
      "kernel slab page",
      "huge page already hardware poisoned",
      "non-pmd-sized huge page",
      "different compound page after locking",
    ];
    it.each(CURRENT)("keeps %j", (pageType) => {
      expect(recordOf(`Memory failure: 0x1: recovery action for ${pageType}: Ignored`)).toMatchObject({ pageType, result: "Ignored" });
    });

    it.each<[string, string, string]>([
      ["Memory failure: 0x1: recovery action for quantum page: Recovered", "quantum page", "Recovered"],
      ["Memory failure: 0x1: recovery action for huge page: Salvaged", "huge page", "Salvaged"],
      ["memory_failure_event: pfn 0x1: recovery action for already poisoned: Ignored", "already poisoned", "Ignored"],
      // __print_symbolic() prints values it has no name for in hex.
      ["memory_failure_event: pfn 0x1: recovery action for 0x17: 0x4", "0x17", "0x4"],
    ])("keeps words it has never seen: %s", (line, pageType, result) => {
      expect(recordOf(line)).toMatchObject({ pageType, result });
    });
  });

  // Lines every stock kernel prints on its way to a verdict (mm/memory-failure.c of the era named).
  describe("stock detail and context lines", () => {
    it.each<[string, KernelRecord]>([
      // 4.13+: get_any_page() before the verdict `get hwpoison page: Ignored` or `unknown page: Ignored`.
      ["Memory failure: 0x5205: unhandlable page.", { type: "unhandlable", pfn: 0x5205, era: "4.13+" }],
      // 5.x to 6.10: memory_failure() on a page poisoned before; 6.11+ says it in the verdict.
      ["Memory failure: 0x5205: already hardware poisoned", { type: "page-detail", pfn: 0x5205, detail: "already-poisoned", era: "4.13+" }],
      // has_extra_refcount(): the count is printed with %d and is -1 when it underflowed.
      ["Memory failure: 0x5205: huge page still referenced by -1 users", { type: "page-detail", pfn: 0x5205, detail: "still-referenced", era: "4.13+" }],
      ["Memory failure: 0x5205: dirty LRU page still referenced by 2 users", { type: "page-detail", pfn: 0x5205, detail: "still-referenced", era: "4.13+" }],
      // me_pagecache_clean() on a clean page-cache page.
      [
        "Memory failure: 0x5205: corrupted page was clean: dropped without side effects",
        { type: "page-detail", pfn: 0x5205, detail: "clean-dropped", era: "4.13+" },
      ],
      // identify_page_state() found no handler.
      ["Memory failure: 0x5205: Unknown page state", { type: "page-detail", pfn: 0x5205, detail: "unknown-state", era: "4.13+" }],
      ["MCE 0x5205: Unknown page state", { type: "page-detail", pfn: 0x5205, detail: "unknown-state" }],
      // 2.6.32: the page's flags and counts before the verdict.
      [
        "MCE 0x5205: page flags 0x40000000000c0068=uptodate,lru,active,private count 1 mapcount 0",
        { type: "page-detail", pfn: 0x5205, detail: "page-flags", era: "2.6-3.x" },
      ],
      // x86 kill_me_maybe(): a process consumed the error in a copy from user space (action required).
      ["mce: Uncorrected hardware memory error in user-access at 5203000", { type: "user-access", physicalAddress: 0x5203000, pfn: 0x5203 }],
      // Unpoison of every era: done, or refused.
      [
        "Unpoison: Unpoisoned page 0x4407 by hwpoison-inject",
        { type: "unpoison", pfn: 0x4407, done: true, detail: "Unpoisoned page 0x4407 by hwpoison-inject" },
      ],
      ["Unpoison: 0x4407: software-unpoisoned page", { type: "unpoison", pfn: 0x4407, done: true, detail: "0x4407: software-unpoisoned page" }],
    ])("%s", (line, record) => {
      expect(recordOf(line)).toEqual(record);
    });

    it("none of them is a parse error", () => {
      const log = [
        "Memory failure: 0x5205: already hardware poisoned",
        "Memory failure: 0x5205: huge page still referenced by -1 users",
        "Memory failure: 0x5205: corrupted page was clean: dropped without side effects",
        "Memory failure: 0x5205: Unknown page state",
        "MCE 0x5205: page flags 0x40000000000c0068=uptodate,lru,active,private count 1 mapcount 0",
        "mce: Uncorrected hardware memory error in user-access at 5203000",
      ].join("\n");
      expect(parseKernelLog(log).filter((e) => e.result.kind !== "record")).toEqual([]);
    });
  });

  describe("lines of a known shape that are damaged", () => {
    it.each<[string, RegExp]>([
      [
        "Memory failure: 0xZZ: recovery action for huge page: Recovered",
        /^pfn '0xZZ' is not hexadecimal in 'Memory failure: %#lx: recovery action for %s: %s'$/,
      ],
      ["Memory failure: 0x5205: recovery action for huge page", /does not match 'Memory failure: %#lx: recovery action for %s: %s'/],
      ["Memory failure: 0x5205: Sending SIGBUS to hwp:abc due to hardware memory corruption", /pid 'abc' is not a decimal integer/],
      ["Memory failure: 0x5205: Sending SIGBUS to hwp due to hardware memory corruption", /does not match 'Memory failure: %#lx: Sending SIGBUS to %s:%d/],
      ["Memory failure: 0x5205: failed to unmap page (folio mapcount=x)", /mapcount 'x'/],
      ["Memory failure: 0x100000000000000: unhandlable page.", /pfn '0x100000000000000' is above Number.MAX_SAFE_INTEGER/],
      // Found by the fuzz benchmark: a pfn the CRD cannot hold made an event the API server refused.
      ["Memory failure: 0x1e63be00000000: memory outside kernel control", /pfn '0x1e63be00000000' is beyond the 52-bit physical address space/],
      ["Memory failure: 0xZZ: already hardware poisoned", /pfn '0xZZ' is not hexadecimal in 'Memory failure: %#lx: already hardware poisoned'/],
      ["Memory failure: 0x1: huge page still referenced", /unknown message/],
      ["mce: Uncorrected hardware memory error in user-access at nowhere", /ADDR 'nowhere'/],
      ["Memory Failure: 0x1: thp split failed", /unknown message/],
      ["MCE 0xZZ: page flags 0x57ffffc000800e", /pfn '0xZZ'/],
      ["MCE 0xZZ: recovery action for huge page: Recovered", /pfn '0xZZ'/],
      ["MCE: Killing hwp:125 due to hardware memory corruption fault at nowhere", /virtual address 'nowhere'/],
      ["MCE: Killing hwp:125 due to hardware memory corruption", /does not match 'MCE: Killing %s:%d due to hardware memory corruption fault at %lx'/],
      ["mce: [Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 9: zz", /MCi_STATUS 'zz'/],
      ["mce: [Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 9: 1bd000000000000c0", /MCi_STATUS/],
      ["mce: [Hardware Error]: TSC 3ed904d41 ADDR", /not KEY value pairs/],
      ["mce: [Hardware Error]: TSC 3ed904d41 ADDR xyz", /ADDR 'xyz'/],
      ["mce: [Hardware Error]: Something the kernel says one day", /unknown message after 'mce: \[Hardware Error\]: '/],
      ["mce_record: CPU: 0, MCGc/s: 100010a/5", /MC<bank> status missing/],
      ["mce_record: CPU: x, MC9: bd000000000000c0, ADDR/MISC: 0/0", /CPU 'x'/],
      ["mce_record: CPU: 0, MC9: bd000000000000c0", /ADDR missing/],
      ["memory_failure_event: pfn 0x5203 recovery action for huge page: Recovered", /does not match 'memory_failure_event: pfn %#lx: recovery action/],
      ["mc_event: 1 Corrected error: memory read error on A1", /not TP_printk's '%d %s error%s:%s%s on %s \(mc:%d location/],
      ["mc_event: 1 Corrected error: on A1 (mc:0 location:0:0:-1 address:0xZZ grain:32 syndrome:0x0)", /not TP_printk's/],
      ["mc_event: 1 Corrected error: on A1 (mc:0 location:0:0:-1 address:0xffffffffffffffff grain:32 syndrome:0x0)", /above Number.MAX_SAFE_INTEGER/],
      ["mc_event: 1 Corrected error: on A1 (mc:0 location:0:0:-1 address:0x1e63be00000000 grain:32 syndrome:0x0)", /beyond the 52-bit physical address space/],
      ["  kworker/0:2-31    [000] ....  1045.5: rasdaemon mc_event: 1 Corrected error: on A1", /behind a log prefix/],
      ["Injecting memory failure at pfn nowhere", /pfn 'nowhere'/],
      ["Injecting memory failure somewhere", /unknown message after 'Injecting memory failure '/],
      ["Soft offlining pfn 0x4205 at process virtual address 0xZZ", /virtual address '0xZZ'/],
      ["soft offline: zz: page already poisoned", /pfn 'zz'/],
      ["Unpoison: Software-unpoisoned page 0xZZ", /pfn '0xZZ'/],
      ["0x1234: recovery action for huge page", /does not match '%#lx: recovery action for %s: %s'/],
      ["foo bar Memory failure: 0x5205: recovery action for huge page: Recovered", /behind a log prefix/],
      ["rasdaemon: Memory failure: 0x5205: recovery action for huge page: Recovered", /behind a log prefix/],
      [`Memory failure: 0x1: recovery action for ${"x".repeat(5000)}: Ignored`, /longer than 4096 characters/],
    ])("%s is unrecognized", (line, reason) => {
      const result = parseKernelLine(line);
      expect(result).toMatchObject({ kind: "unrecognized", reason: expect.stringMatching(reason) as unknown });
    });
  });

  it.each([
    "e1000e: eth0 NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx",
    "EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
    "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
    "[  123.456789] e1000e: eth0 NIC Link is Up",
    "6,901,3901234,-;usb 1-1: new high-speed USB device number 2 using xhci_hcd",
    "Nov 25 22:17:56 node-1 kernel: EXT4-fs (sda1): mounted filesystem",
    "mce: CPU0: Thermal monitoring enabled (TM1)",
    "mce: CPU supports 10 MCE banks",
    "MCE: In-kernel MCE decoding enabled.",
    "EDAC sbridge MC0: HANDLING MCE MEMORY ERROR",
    "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#2_DIMM#0 (channel:2 slot:0 page:0x849923 offset:0x380 grain:32 syndrome:0x0 -  area:DRAM)",
    "Jan 27 19:27:15 node-1 rasdaemon[812]: ras:mc_event event enabled",
    "{1}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 0",
    "[Hardware Error]: Corrected error, no action required.",
    "[Hardware Error]: CPU:0 (17:31:0) MC27_STATUS[-|CE|MiscV|-|-|-|-|SyndV|-]: 0xdc2040000000011b",
    " DEVICE=+mce:machinecheck0",
    "",
  ])("ignores %j", (line) => {
    expect(parseKernelLine(line)).toEqual({ kind: "ignored" });
  });
});

describe("log prefixes", () => {
  const PREFIXES = [
    "3,1234,5678901,-;",
    "3,1234,5678901,-,caller=T54990;",
    "[  123.456789] ",
    "[Wed Nov 25 22:17:56 2026] ",
    "[Thu Nov  5 02:17:56 2026] ",
    "[    C1] ",
    "[T54990] ",
    "[  123.456789][    C1] ",
    "[  123.456789] [T54990] ",
    "Nov 25 22:17:56 node-1 kernel: ",
    "Nov  5 22:17:56 kernel: ",
    "Nov 25 22:17:56.123456 node-1.example.com kernel: ",
    "Nov 25 22:17:56 node-1 kernel: [  123.456789] ",
    "2026-11-25T22:17:56+0000 node-1 kernel: ",
    "2026-11-25T22:17:56.123456+00:00 node-1 kernel: ",
    "2026-11-25T22:17:56.123456Z kernel: ",
    "Wed 2026-11-25 22:17:56 UTC node-1 kernel: ",
    "2026-11-25T22:17:56,123456+00:00 ",
    "[  123.456789] node-1 kernel: ",
    "kernel: ",
    "<3>",
    "<3>[  123.456789] ",
    "kern  :err   : [  123.456789] ",
  ];
  // One line of each family; the trace events arrive without log prefixes but must not mind them.
  const MESSAGES = [
    "Memory failure: 0x5205: recovery action for huge page: Recovered",
    "Memory failure: 0x3e09: Sending SIGBUS to hwp:462 due to hardware memory corruption",
    "MCE: Killing hwp:125 due to hardware memory corruption fault at 7f56bd805000",
    "MCE 0x23a200: free buddy, 2nd try page recovery: Delayed",
    "0x1234: recovery action for huge page: Recovered",
    "Injecting memory failure at pfn 0x4600",
    "Soft offlining pfn 0x4205 at process virtual address 0x7f2cec605000",
    "soft offline: 0x1234 page already poisoned",
    "Unpoison: Software-unpoisoned page 0x4407",
    "mce: [Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 9: bd000000000000c0",
    "mce: [Hardware Error]: TSC 3ed904d41 ADDR 5203000 MISC 8c ",
    "memory_failure_event: pfn 0x5203: recovery action for huge page: Recovered",
    "Memory failure: 0xZZ: recovery action for huge page: Recovered",
  ];

  describe.each(PREFIXES)("%j", (prefix) => {
    it.each(MESSAGES)("%s reads as without it", (message) => {
      expect(parseKernelLine(prefix + message)).toEqual(parseKernelLine(message));
    });
  });

  it.each<[string, StrippedLine]>([
    [
      "3,1234,5678901,-;Memory failure: x",
      { text: "Memory failure: x", kmsg: { priority: 3, facility: 0, level: 3, sequence: 1234, timestampUsec: 5678901 }, facility: 0 },
    ],
    [
      "12,77,99,-,caller=T54990;hello",
      { text: "hello", kmsg: { priority: 12, facility: 1, level: 4, sequence: 77, timestampUsec: 99 }, facility: 1, callerId: "T54990" },
    ],
    ["<14>hello", { text: "hello", facility: 1 }],
    ["[  123.456789] x", { text: "x", timestamp: "123.456789" }],
    ["[  123.456789][    C1] x", { text: "x", timestamp: "123.456789", callerId: "C1" }],
    ["[  123.456789] [T54990] x", { text: "x", timestamp: "123.456789", callerId: "T54990" }],
    ["[Wed Nov 25 22:17:56 2026] x", { text: "x", timestamp: "Wed Nov 25 22:17:56 2026" }],
    ["Nov 25 22:17:56 node-1 kernel: [  123.456789] x", { text: "x", timestamp: "Nov 25 22:17:56" }],
    ["2026-11-25T22:17:56.123456+00:00 node-1 kernel: x", { text: "x", timestamp: "2026-11-25T22:17:56.123456+00:00" }],
    ["Wed 2026-11-25 22:17:56 UTC node-1 kernel: x", { text: "x", timestamp: "Wed 2026-11-25 22:17:56 UTC" }],
    ["     kworker/0:2-53      [000] .....   123.460000: memory_failure_event: x", { text: "memory_failure_event: x", timestamp: "123.460000" }],
    ["  my-proc-12-345 (  345) [001] d..1. 9.5: mce_record: x", { text: "mce_record: x", timestamp: "9.5" }],
    ["x  ", { text: "x" }],
    // A message that merely starts like a stamp keeps its words.
    ["2026-11-25T22:17:56 MCE 0x1: huge page recovery: Delayed", { text: "MCE 0x1: huge page recovery: Delayed", timestamp: "2026-11-25T22:17:56" }],
  ])("strips %j", (line, stripped) => {
    expect(stripLogPrefix(line)).toEqual(stripped);
  });

  it("takes no words with control characters in them: a damaged line is reported, never an event (issue 17)", () => {
    for (const damaged of [
      "Memory failure: 0x5205: recovery action for huge\u0000 page: Recovered",
      "Memory failure: 0x5205: recovery action for huge page: Recov\u0000ered",
      "Memory failure: 0x5205: recovery action for huge\r page: Recovered",
      "Memory failure: 0x5205: recovery action for huge\u001b[31m page: Recovered",
    ])
      expect(parseKernelLine(damaged)).toMatchObject({ kind: "unrecognized", reason: expect.stringMatching(/control characters/) as unknown });
    // A CR at the end (CRLF text) is line ending, not damage.
    expect(parseKernelLine("Memory failure: 0x5205: recovery action for huge page: Recovered\r")).toMatchObject({ kind: "record" });
  });

  it("takes no record from a line user space wrote to /dev/kmsg, under its own facility (issue 17)", () => {
    const verdict = "Memory failure: 0x5205: recovery action for huge page: Recovered";
    expect(parseKernelLine(`3,90,100,-;${verdict}`)).toMatchObject({ kind: "record" });
    expect(parseKernelLine(`<3>${verdict}`)).toMatchObject({ kind: "record" });
    for (const forged of [`11,91,100,-;${verdict}`, `14,92,100,-;${verdict}`, `<14>${verdict}`, `<131>${verdict}`])
      expect(parseKernelLine(forged)).toMatchObject({
        kind: "unrecognized",
        reason: expect.stringMatching(/written by user space \(syslog facility \d+\)/) as unknown,
      });
  });

  it("reads the kernel's uptime from a kmsg header or a printk time, and nothing from a wall clock", () => {
    expect(uptimeUsec(stripLogPrefix("6,420,2504000,-;Freeing unused kernel image (initmem) memory: 2712K"))).toBe(2_504_000);
    expect(uptimeUsec(stripLogPrefix("[    4.25] Freeing unused kernel memory: 1616K"))).toBe(4_250_000);
    expect(uptimeUsec(stripLogPrefix("[  123.456789][    C1] x"))).toBe(123_456_789);
    expect(uptimeUsec(stripLogPrefix("Nov 25 22:17:56 node-1 kernel: x"))).toBeUndefined();
  });

  it("knows the kernel's last lines before init, of every era, and nothing like them", () => {
    // free_initmem: 2.6 to 4.x, 4.x to 5.x, 5.x on; run_init_process: 5.x on.
    expect(bootFinishedAt("[    1.500000] Freeing unused kernel memory: 1264k freed")).toBe(1_500_000);
    expect(bootFinishedAt("[    1.500000] Freeing unused kernel image memory: 1616K")).toBe(1_500_000);
    expect(bootFinishedAt("6,420,2504000,-;Freeing unused kernel image (initmem) memory: 2712K")).toBe(2_504_000);
    expect(bootFinishedAt("6,431,2611000,-;Run /init as init process")).toBe(2_611_000);
    expect(bootFinishedAt("[    2.6] Run /sbin/init as init process")).toBe(2_600_000);
    expect(bootFinishedAt("[    2.6] Freeing unused kernel image (text/rodata gap) memory: 2040K")).toBeUndefined();
    expect(bootFinishedAt("[  900.1] myapp: Run /init as init process, said the user")).toBeUndefined();
    expect(bootFinishedAt("Freeing unused kernel image (initmem) memory: 2712K")).toBeUndefined();
  });

  it("tells /dev/kmsg dictionary lines from messages", () => {
    expect(isKmsgDictionaryLine(" SUBSYSTEM=pci")).toBe(true);
    expect(isKmsgDictionaryLine(" DEVICE=+pci:0000:00:1f.2")).toBe(true);
    expect(isKmsgDictionaryLine("SUBSYSTEM=pci")).toBe(false);
    expect(isKmsgDictionaryLine(" Memory failure: 0x1: unhandlable page.")).toBe(false);
  });
});

describe("MCi_STATUS", () => {
  const NONE: MciStatus = {
    valid: false,
    overflow: false,
    uncorrected: false,
    enabled: false,
    miscValid: false,
    addrValid: false,
    pcc: false,
    signaled: false,
    actionRequired: false,
    errorCode: 0,
  };

  it("decodes the status kernel-facts.md injects (SRAO memory scrub)", () => {
    const decoded = decodeMciStatus("bd000000000000c0");
    expect(decoded).toEqual({ ...NONE, valid: true, uncorrected: true, enabled: true, miscValid: true, addrValid: true, signaled: true, errorCode: 0xc0 });
    expect(mceSeverity(decoded)).toBe("action-optional");
    expect(decodeMciStatus(0xbd000000000000c0n)).toEqual(decoded);
    expect(decodeMciStatus("0xBD000000000000C0")).toEqual(decoded);
  });

  it.each<[string, MceSeverity]>([
    ["9c000040000800c0", "corrected"], // V EN MISCV ADDRV
    ["8c00004000010090", "corrected"],
    ["bd80000000100134", "action-required"], // SRAR data load
    ["bd000000000000c0", "action-optional"], // SRAO scrub
    ["a400000000000000", "action-optional"], // UCNA: UC without S
    ["be00000000800400", "fatal"], // PCC
    ["ff80000000000000", "fatal"],
  ])("%s is %s", (status, severity) => {
    expect(mceSeverity(decodeMciStatus(status))).toBe(severity);
  });

  it.each([63, 62, 61, 60, 59, 58, 57, 56, 55])("reads bit %d alone", (bit) => {
    const decoded = decodeMciStatus(1n << BigInt(bit));
    expect(Object.values(decoded).filter((value) => value === true)).toHaveLength(1);
  });

  it("rejects what is not a 64-bit value", () => {
    expect(() => decodeMciStatus("xyz")).toThrow(/MCi_STATUS 'xyz'/);
    expect(() => decodeMciStatus("10000000000000000")).toThrow(/MCi_STATUS/);
    expect(() => decodeMciStatus(-1n)).toThrow(RangeError);
    expect(() => decodeMciStatus(1n << 64n)).toThrow(RangeError);
  });
});

describe("parseKernelLog", () => {
  type Summary = [number, KernelLineResult["kind"], string?, number?];
  function summary(text: string): Summary[] {
    return parseKernelLog(text).map(({ line, result }): Summary => {
      if (result.kind !== "record") return [line, result.kind];
      return [line, result.kind, result.record.type, "pfn" in result.record ? result.record.pfn : undefined];
    });
  }

  it("reads the observed 6.1 scenarios in order", () => {
    expect(summary(testdata("observed-6.1.dmesg"))).toEqual([
      [1, "ignored"],
      [2, "ignored"],
      [3, "ignored"],
      [4, "ignored"],
      [6, "record", "recovery", 0x5205],
      [7, "record", "killed-on-access", undefined],
      [8, "record", "signal-sent", 0x3e09],
      [9, "record", "recovery", 0x3e09],
      [10, "record", "signal-sent", 0x3e11],
      [11, "record", "signal-sent", 0x3e11],
      [12, "record", "recovery", 0x3e11],
      [13, "record", "injected", 0x4600],
      [14, "record", "recovery", 0x4600],
      [15, "record", "unpoison", 0x4407],
      [16, "record", "soft-offline", 0x4205],
      [17, "record", "injected", 0x100005],
      [18, "record", "recovery", 0x100005],
      [19, "record", "mce-logged", undefined],
      [20, "record", "mce-detail", undefined],
      [21, "record", "mce-detail", undefined],
      [22, "record", "mce-detail", 0x5203],
      [23, "record", "mce-detail", undefined],
      [24, "record", "mce-detail", undefined],
      [25, "record", "signal-sent", 0x5203],
      [26, "record", "recovery", 0x5203],
      [27, "ignored"],
    ]);
  });

  it("skips /dev/kmsg dictionary lines and empty lines, and counts them", () => {
    expect(summary(testdata("kmsg.txt"))).toEqual([
      [1, "ignored"],
      [2, "ignored"],
      [5, "record", "recovery", 0x5205],
      [6, "record", "killed-on-access", undefined],
      [8, "record", "mce-detail", undefined],
      [9, "ignored"],
    ]);
  });

  it("reads trace_pipe output", () => {
    expect(summary(testdata("trace_pipe.txt"))).toEqual([
      [1, "ignored"],
      [2, "ignored"],
      [3, "record", "mce-record", 0x5203],
      [4, "record", "recovery", 0x5203],
      [5, "record", "recovery", 0x5003],
    ]);
  });

  it("reads CRLF text", () => {
    expect(summary("Memory failure: 0x1: unhandlable page.\r\n\r\nMemory failure: 0x2: unhandlable page.\r\n")).toEqual([
      [1, "record", "unhandlable", 1],
      [3, "record", "unhandlable", 2],
    ]);
  });
});

describe("properties", () => {
  // Pieces of real lines, so that random text reaches deep into the grammar.
  const FRAGMENTS = [
    "Memory failure: ",
    "MCE ",
    "MCE: ",
    "mce: ",
    "[Hardware Error]: ",
    "0x",
    "5205",
    "ZZ",
    ": ",
    ":",
    " ",
    "recovery action for ",
    "huge page",
    "Recovered",
    "Sending SIGBUS to ",
    " due to hardware memory corruption",
    " fault at ",
    "Killing ",
    "hwp",
    "462",
    "soft offline: ",
    "Soft offlining pfn ",
    "Unpoison: ",
    "Injecting memory failure ",
    "at pfn ",
    " page recovery: ",
    "CPU 0: Machine Check Exception: ",
    " Bank 9: ",
    "bd000000000000c0",
    "TSC ",
    " ADDR ",
    " MISC ",
    "memory_failure_event: pfn ",
    "mce_record: ",
    "mc_event: ",
    "1 Corrected error",
    "s",
    ":",
    " on ",
    " or ",
    " (mc:0",
    " location:",
    "-1",
    ":0:-1",
    " address:0x",
    "849923380",
    " grain:32",
    " syndrome:0x0",
    "MC9: ",
    ", ",
    "ADDR/MISC: ",
    "/",
    "[  1.5] ",
    "3,1,2,-;",
    "kernel: ",
    "(folio mapcount=",
    ")",
    "\n",
    "\u2028",
  ];
  const fragmentLines = fc.array(fc.constantFrom(...FRAGMENTS), { maxLength: 16 }).map((pieces) => pieces.join(""));
  const anyLine = fc.oneof(fc.string({ unit: "binary", maxLength: 300 }), fragmentLines);

  it("never throws, and every record's numbers are exact", () => {
    fc.assert(
      fc.property(anyLine, (line) => {
        stripLogPrefix(line);
        parseKernelLog(line);
        const result = parseKernelLine(line);
        if (result.kind === "record") {
          for (const value of Object.values(result.record)) {
            if (typeof value === "number") expect(Number.isSafeInteger(value) && value >= 0).toBe(true);
          }
        }
      }),
      { numRuns: 3000 },
    );
  });

  // /dev/kmsg and dmesg print a control character as \xNN: none reaches a line raw.
  // eslint-disable-next-line no-control-regex
  const printable = (text: string): boolean => !/[\u0000-\u001f\u007f]/.test(text);
  const pageType = fc.string({ unit: "binary", minLength: 1, maxLength: 40 }).filter((word) => !word.includes(":") && printable(word));
  const result = fc.oneof(fc.constantFrom("Ignored", "Failed", "Delayed", "Recovered"), fc.stringMatching(/^[A-Za-z0-9]{1,12}$/));
  const prefix = fc.constantFrom("", "[  12.5] ", "3,1,2,-;", "Nov 25 22:17:56 node-1 kernel: ");

  it("round-trips pfn, page type and result of a recovery line", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: MAX_PFN }),
        pageType,
        result,
        fc.constantFrom("Memory failure: ", "MCE ", ""),
        prefix,
        (pfn, type, word, leader, logPrefix) => {
          const record = recordOf(`${logPrefix}${leader}${formatPfn(pfn)}: recovery action for ${type}: ${word}`);
          expect(record).toMatchObject({ type: "recovery", pfn, pageType: type, result: word });
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("round-trips any command name, colons and spaces included", () => {
    const command = fc.string({ unit: "binary", minLength: 1, maxLength: 15 }).filter(printable);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: MAX_PFN }), command, fc.integer({ min: 1, max: 4_194_304 }), (pfn, name, pid) => {
        const record = recordOf(`Memory failure: ${formatPfn(pfn)}: Sending SIGBUS to ${name}:${pid} due to hardware memory corruption`);
        expect(record).toEqual({ type: "signal-sent", pfn, command: name, pid, era: "4.13+" });
      }),
      { numRuns: 2000 },
    );
  });

  it("round-trips every field of EDAC's mc_event, whatever the message, labels and detail", () => {
    // The kernel's own strings: a message is a driver's words (none begins or ends a word "on"), a label
    // anything a DIMM label or several joined by " or " can hold.
    const piece = fc.oneof(
      fc.constantFrom(" ", "  ", " or ", "on", " on ", "(", ")", ":", "#", "_", "DIMM", "A1", "mc:", "0x1f", "error"),
      fc.string({ unit: "binary", maxLength: 5 }),
    );
    const text = (maxLength: number) => fc.array(piece, { maxLength }).map((pieces) => pieces.join(""));
    const message = text(6).filter((m) => printable(m) && !/(?:^| )on(?: |$)/.test(m));
    const label = text(10).filter((l) => printable(l) && !l.includes(" (mc:"));
    const detail = text(10).filter(printable);
    const layer = fc.integer({ min: -1, max: 127 });
    fc.assert(
      fc.property(
        fc.record({
          count: fc.integer({ min: 0, max: 65_535 }),
          errorType: fc.constantFrom("Corrected", "Uncorrected", "Deferred", "Fatal", "Info"),
          message,
          label,
          mc: fc.integer({ min: 0, max: 255 }),
          layers: fc.tuple(layer, layer, layer),
          address: fc.integer({ min: 0, max: 2 ** 52 - 1 }),
          grainBits: fc.integer({ min: 0, max: 30 }),
          syndrome: fc.integer({ min: 0, max: 0xffffffff }),
          detail,
        }),
        prefix,
        (e, logPrefix) => {
          const hex = (n: number): string => n.toString(16).padStart(8, "0");
          const line =
            `${logPrefix}mc_event: ${e.count} ${e.errorType} error${e.count > 1 ? "s" : ""}:${e.message === "" ? "" : " "}${e.message} on ${e.label} ` +
            `(mc:${e.mc} location:${e.layers.join(":")} address:0x${hex(e.address)} grain:${2 ** e.grainBits} syndrome:0x${hex(e.syndrome)}` +
            `${e.detail === "" ? "" : " "}${e.detail})`;
          const record = recordOf(line);
          const detailWords = e.detail.trim();
          expect(record).toEqual({
            type: "mc-event",
            errorType: e.errorType,
            count: e.count,
            message: e.message,
            label: e.label,
            mc: e.mc,
            layers: e.layers,
            ...(e.address !== 0 && { address: hex(e.address), physicalAddress: e.address, pfn: Math.floor(e.address / 4096) }),
            grain: 2 ** e.grainBits,
            syndrome: hex(e.syndrome),
            ...(detailWords !== "" && { detail: detailWords }),
          });
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("never makes a record from a pfn that is not hex", () => {
    const junk = fc.stringMatching(/^[^\s:]{1,12}$/).filter((token) => !/^(?:0[xX])?[0-9a-fA-F]+$/.test(token));
    fc.assert(
      fc.property(junk, (token) => {
        expect(parseKernelLine(`Memory failure: ${token}: recovery action for huge page: Recovered`).kind).toBe("unrecognized");
      }),
    );
  });
});
