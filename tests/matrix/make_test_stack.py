"""Stacks the real test scene (tests/data, served by the loopback Planetary Computer double) over
the demo's 8 km area into FOLDER/s2.tif and FOLDER/s2_mask.tif: the input of the bare-QGIS
install check, made on the host because the bare QGIS has no packages yet."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TESTS.parent / ".build" / "plugins"), str(TESTS)]

from pc_server import PlanetaryComputerDouble  # noqa: E402
from shapely.geometry import box  # noqa: E402
from stack_helpers import fixture_item  # noqa: E402

from s2masks.core import grid, records, stack  # noqa: E402


def main(folder: Path) -> None:
    """Writes the stack and its product mask into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    area = box(-8.74, 53.09, -8.62, 53.16)
    with PlanetaryComputerDouble() as double:
        item = records.parse_item(fixture_item(double))
        stack.stack_acquisition([item], area, grid.output_grid(area), folder / "s2.tif", folder / "s2_mask.tif",
                                stack.StackOptions(cache_dir=folder / "cache"))
    print(f"Wrote {folder / 's2.tif'} and {folder / 's2_mask.tif'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
