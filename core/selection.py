"""Choose, per acquisition, the fewest tiles that cover the area (FarmVibes'
select_necessary_coverage_items, improved).

FarmVibes keeps a pass only if its tiles cover more than `min_cover` of the area, then
picks tiles greedily by largest remaining intersection, measuring in degrees. We:
- measure areas in an equal-area projection centred on the area (core.geometry);
- search for a truly minimal set (fewest tiles; among those, the largest cover), which
  greedy picking does not guarantee, falling back to greedy only when the number of
  combinations would be too large;
- apply `max_tiles` to the chosen set itself, not by truncating the candidate list;
- report every dropped pass with its reason instead of dropping it silently.

Ties are broken deterministically: larger intersection with the area first, then the
newest processing (item id's processing timestamp), then the item id.
"""

import itertools
from dataclasses import dataclass
from math import comb
from typing import Optional, Tuple

from .errors import InputError
from .geometry import EqualAreaProjection

# Union computations allowed per pass for the exact search before falling back to greedy.
EXACT_SEARCH_BUDGET = 20000
_EPSILON = 1e-9


@dataclass(frozen=True)
class PassSelection:
    """The outcome for one acquisition (one satellite pass)."""

    key: Tuple
    candidates: Tuple  # items of the pass that touch the area, best-ranked first
    selected: Tuple  # chosen items, in choosing order; empty when dropped
    cover: float  # fraction of the area covered by `selected` (0 when dropped)
    best_cover: float  # fraction covered by all candidates together
    dropped_reason: Optional[str] = None
    method: str = "exact"


def validate_selection_parameters(min_cover, max_tiles):
    if not 0 < min_cover <= 1:
        raise InputError(
            f"min_tile_cover must be a fraction in (0, 1], got {min_cover}. "
            "0.99 keeps only passes that cover 99% of the area."
        )
    if max_tiles is not None and max_tiles < 1:
        raise InputError(f"max_tiles_per_time must be at least 1 (or empty for no limit), got {max_tiles}.")


class _Coverage:
    """Areas of items' intersections with one area, in square metres."""

    def __init__(self, area_wgs84):
        self.projection = EqualAreaProjection(area_wgs84)
        self.area = self.projection.project(area_wgs84)
        self.area_m2 = self.area.area
        self._parts = {}

    def part(self, item):
        import shapely

        if item.id not in self._parts:
            footprint = self.projection.project(item.footprint)
            # Disjoint shapes skip GEOS' intersection, which warns on their empty result.
            touching = shapely.intersects(footprint, self.area)
            self._parts[item.id] = shapely.intersection(footprint, self.area) if touching else shapely.Polygon()
        return self._parts[item.id]

    def fraction(self, items):
        import shapely

        if not items:
            return 0.0
        union = shapely.union_all([self.part(item) for item in items])
        return min(1.0, union.area / self.area_m2)


def item_cover_fractions(items, area_wgs84):
    """item id -> fraction of the area that the item's footprint covers."""
    coverage = _Coverage(area_wgs84)
    return {item.id: coverage.fraction([item]) for item in items}


def select_necessary_coverage(items, area_wgs84, min_cover=0.99, max_tiles=None, log=None):
    """Group `items` (Sentinel2Item) by acquisition and choose tiles per group.

    Returns one PassSelection per acquisition, in time order.
    """
    validate_selection_parameters(min_cover, max_tiles)
    log = log or (lambda message: None)
    coverage = _Coverage(area_wgs84)
    groups = {}
    for item in items:
        groups.setdefault(item.acquisition_key, []).append(item)
    results = []
    for key in sorted(groups, key=lambda k: (k[1], k[0])):
        result = _select_pass(key, groups[key], coverage, min_cover, max_tiles)
        results.append(result)
        log(_describe(result))
    return results


def selected_items(results):
    return [item for result in results for item in result.selected]


def _describe(result):
    platform, when = result.key
    label = f"{when:%Y-%m-%d %H:%M} {platform}"
    if result.dropped_reason:
        return f"{label}: dropped, {result.dropped_reason}"
    tiles = ", ".join(item.mgrs_tile for item in result.selected)
    return f"{label}: {len(result.selected)} tile(s) [{tiles}] cover {result.cover:.1%} of the area"


def _rank(items, coverage):
    """Best first: largest intersection, newest processing, then id."""
    ranked = sorted(items, key=lambda item: item.id)
    ranked.sort(key=lambda item: item.id.rsplit("_", 1)[-1], reverse=True)
    ranked.sort(key=lambda item: round(coverage.part(item).area / coverage.area_m2, 9), reverse=True)
    return ranked


def _one_per_tile(ranked):
    """Reprocessed copies of a tile have the same footprint: keep the best-ranked one."""
    seen, kept = set(), []
    for item in ranked:
        if item.mgrs_tile not in seen:
            seen.add(item.mgrs_tile)
            kept.append(item)
    return kept


def _select_pass(key, items, coverage, min_cover, max_tiles):
    touching = [item for item in items if coverage.part(item).area > _EPSILON * coverage.area_m2]
    candidates = tuple(_one_per_tile(_rank(touching, coverage)))
    best_cover = coverage.fraction(candidates)

    def dropped(reason):
        return PassSelection(key, candidates, (), 0.0, best_cover, reason)

    if not candidates:
        return dropped("no tile of this pass touches the area")
    if best_cover < min_cover - _EPSILON:
        return dropped(f"its tiles cover only {best_cover:.1%} of the area (min_tile_cover {min_cover:.1%})")
    limit = min(len(candidates), max_tiles or len(candidates))
    chosen, method = _smallest_cover(candidates, coverage, min_cover, limit)
    if not chosen:
        return dropped(f"more than max_tiles_per_time={max_tiles} tiles are needed to reach {min_cover:.1%}")
    return PassSelection(key, candidates, tuple(chosen), coverage.fraction(chosen), best_cover, None, method)


def _smallest_cover(candidates, coverage, min_cover, limit):
    """Fewest candidates reaching `min_cover`; among equals, the largest cover."""
    budget = EXACT_SEARCH_BUDGET
    for size in range(1, limit + 1):
        if comb(len(candidates), size) > budget:
            return _greedy_cover(candidates, coverage, min_cover, limit), "greedy"
        budget -= comb(len(candidates), size)
        best, best_cover = None, min_cover - _EPSILON
        for combination in itertools.combinations(candidates, size):
            cover = coverage.fraction(combination)
            if cover > best_cover + _EPSILON or (best is None and cover >= best_cover):
                best, best_cover = list(combination), cover
        if best:
            return best, "exact"
    return None, "exact"


def _greedy_cover(candidates, coverage, min_cover, limit):
    """FarmVibes' rule: repeatedly take the tile adding the most uncovered area."""
    import shapely

    chosen, remaining = [], list(candidates)
    while remaining and len(chosen) < limit:
        uncovered = shapely.difference(coverage.area, shapely.union_all([coverage.part(i) for i in chosen]))
        best = max(remaining, key=lambda item: shapely.intersection(coverage.part(item), uncovered).area)
        chosen.append(best)
        remaining.remove(best)
        if coverage.fraction(chosen) >= min_cover - _EPSILON:
            return chosen
    return None
