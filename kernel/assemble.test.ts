// Stock sequences of memory-failure lines, as the kernel of each era prints them for one pfn: one error
// per pfn, with the verdict's words, whatever detail comes first.
import { describe, expect, it } from "vitest";
import { assembleKernelErrors } from "./assemble.ts";

const assemble = (...lines: string[]) => assembleKernelErrors(lines.join("\n"));

describe("assembleKernelErrors on stock sequences", () => {
  it("unhandlable page. is detail: the verdict that follows names the error (get_any_page, then action_result)", () => {
    for (const verdict of ["get hwpoison page: Ignored", "unknown page: Ignored", "reserved kernel page: Ignored"]) {
      const out = assemble("Memory failure: 0x5205: unhandlable page.", `Memory failure: 0x5205: recovery action for ${verdict}`);
      expect(out.unrecognized).toEqual([]);
      expect(out.errors.map((e) => [e.pfn, `${e.pageType ?? ""}: ${e.result ?? ""}`, e.lines.length])).toEqual([[0x5205, verdict, 2]]);
    }
  });

  it("detail lines before the verdict join its error and are no parse error", () => {
    const out = assemble(
      "Memory failure: 0x5205: huge page still referenced by -1 users",
      "Memory failure: 0x5205: corrupted page was clean: dropped without side effects",
      "Memory failure: 0x5205: recovery action for clean LRU page: Recovered",
    );
    expect(out.unrecognized).toEqual([]);
    expect(out.errors).toMatchObject([{ pfn: 0x5205, pageType: "clean LRU page", result: "Recovered" }]);
    expect(out.errors[0]?.lines).toHaveLength(3);
  });

  it("6.11+: an already-poisoned page's kill line and verdict make one error whose words say it was poisoned before", () => {
    const out = assemble(
      "Memory failure: 0x5205: already hardware poisoned",
      "Memory failure: 0x5205: Sending SIGBUS to hwp:462 due to hardware memory corruption",
      "Memory failure: 0x5205: recovery action for already poisoned page: Failed",
    );
    expect(out.errors).toMatchObject([{ pfn: 0x5205, pageType: "already poisoned page", result: "Failed", signalled: [{ command: "hwp", pid: 462 }] }]);
  });

  it("a consumed error in a copy from user space is action-required, with the machine check's address", () => {
    const out = assemble(
      "mce: Uncorrected hardware memory error in user-access at 5203000",
      "Memory failure: 0x5203: Sending SIGBUS to hwp:462 due to hardware memory corruption",
      "Memory failure: 0x5203: recovery action for huge page: Recovered",
    );
    expect(out.errors).toMatchObject([{ pfn: 0x5203, severity: "ActionRequired", physicalAddress: 0x5203000, pageType: "huge page", result: "Recovered" }]);
  });

  it("memory outside kernel control ends its error: no verdict follows it", () => {
    expect(assemble("Memory failure: 0x7f000: memory outside kernel control").errors).toMatchObject([
      { pfn: 0x7f000, pageType: "memory outside kernel control", result: "Ignored" },
    ]);
  });

  it("a soft offline that did not happen is a failed attempt, with the kernel's words", () => {
    const failed = [
      "soft offline: 0x5205: migration failed 1, type 57ffffc000800e",
      "soft offline: 0x5205: hugepage isolation failed, page count 2, type 0x57ffffc000800e(referenced|uptodate|dirty|head)",
      "Soft offline: 0x5205: page already poisoned",
      "__get_any_page: 0x5205: unknown zero refcount page type 57ffffc0000000",
    ];
    for (const line of failed) {
      const out = assemble(line);
      expect(out.unrecognized).toEqual([]);
      expect(out.errors).toMatchObject([{ pfn: 0x5205, severity: "SoftOffline", result: "Failed" }]);
    }
    // Done: the page was moved and retired.
    expect(assemble("Soft offlining pfn 0x5205 at process virtual address 0x7f0000205000").errors[0]?.result).toBeUndefined();
  });

  it("reports only the unpoisons that were done", () => {
    const out = assemble(
      "Unpoison: Software-unpoisoned page 0x4407",
      "Unpoison: Unpoisoned page 0x4408 by hwpoison-inject",
      "Unpoison: 0x4409: software-unpoisoned page",
      "MCE: Memory failure is now running on 0x4410",
      "Unpoison: Page was already unpoisoned 0x4411",
      "Unpoison: Disabled after HW memory failure 0x4412",
    );
    expect(out.unpoisoned.map((u) => u.pfn)).toEqual([0x4407, 0x4408, 0x4409]);
    expect(out.unrecognized).toEqual([]);
  });
});
