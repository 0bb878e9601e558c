// Kubernetes resource quantities (512Mi, 2Gi, 1G, 1500k, plain bytes), in bytes, and back.
const suffixes: Record<string, number> = { "": 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15 };

export function parseQuantity(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/.exec(text.trim());
  if (!m) throw new Error(`${JSON.stringify(text)} is not a quantity such as 512Mi or 2Gi`);
  return Math.round(Number(m[1]) * (suffixes[m[2] ?? ""] ?? 1));
}

/** The shortest exact binary form: 2Mi, 1Gi, 4096Ki, or plain bytes. */
export function formatBytes(bytes: number): string {
  for (const [unit, scale] of [
    ["Ti", 2 ** 40],
    ["Gi", 2 ** 30],
    ["Mi", 2 ** 20],
    ["Ki", 2 ** 10],
  ] as const)
    if (bytes !== 0 && bytes % scale === 0) return `${bytes / scale}${unit}`;
  return `${bytes}`;
}
