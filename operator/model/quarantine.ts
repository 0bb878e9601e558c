// Which quarantines a node keeps: what they hold together covers the hugepage capacity the kubelet
// advertises beyond what the pools can give, and no more. Pure; one node and one hugepage size at a time.
export interface HeldQuarantine {
  eventName: string;
  bytes: number;
  /** A replacement hugepage was given for this error's page. */
  replaced: boolean;
  decidedAt: string;
}

/**
 * The events whose quarantine of one size on one node to release, given the stale capacity of that size:
 * those whose page was replaced go first, then the newest, until what stays held just covers it. Every
 * event's reconcile computes the same answer from the same node, so they agree without coordination, and
 * a replacement on a node with other lost pages still frees its own placeholder (the first real node
 * held 4Mi for 2Mi of stale capacity).
 */
export function quarantinesToRelease(held: readonly HeldQuarantine[], staleBytes: number): Set<string> {
  const keepFirst = [...held].sort(
    (a, b) => Number(a.replaced) - Number(b.replaced) || a.decidedAt.localeCompare(b.decidedAt) || a.eventName.localeCompare(b.eventName),
  );
  const release = new Set<string>();
  let kept = 0;
  for (const q of keepFirst) {
    if (kept >= staleBytes) release.add(q.eventName);
    else kept += q.bytes;
  }
  return release;
}
