// Walking the flagged scans of a project, in the order leads adjudicate them.

/**
 * The flagged scans before and after this one, in the order leads work through them (most
 * ambiguous first, as GET projects/{id}/flagged-scans/ gives them). A scan that is no longer
 * flagged (just adjudicated) keeps its place by its ambiguity, so "next" goes on from there.
 * @param {Array<{id:number, ambiguity:number|null}>} flagged
 * @param {number} scanId
 * @param {number|null} ambiguity this scan's (for a scan not in the list)
 */
export function flaggedNeighbours(flagged, scanId, ambiguity) {
  const here = flagged.findIndex((s) => s.id === scanId);
  if (here >= 0) return { here, previous: flagged[here - 1], next: flagged[here + 1] };
  const a = ambiguity ?? -Infinity;
  const after = (s) => (s.ambiguity ?? -Infinity) < a || ((s.ambiguity ?? -Infinity) === a && s.id > scanId);
  const index = flagged.findIndex(after);
  const split = index < 0 ? flagged.length : index;
  return { here: -1, previous: flagged[split - 1], next: flagged[split] };
}
