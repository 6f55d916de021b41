"""Colours and strokes shared by the SVG and raster renderers (one place, so both look alike)."""

from __future__ import annotations

from typing import Final

INK: Final = "#263238"
OPEN_LEG: Final = "#1b7a3d"
BACKGROUND: Final = "#ffffff"
FONT_FAMILY: Final = "DejaVu Sans Mono, Menlo, Consolas, monospace"
LINE_WIDTH: Final = 1.6
LABEL_BACKGROUND_OPACITY: Final = 0.85

# shape -> (fill, stroke, dashed)
FILLS: Final[dict[str, tuple[str, str, bool]]] = {
    "data": ("#dbe8f6", "#1f4e79", False),
    "pattern": ("#fde3c3", "#b35900", False),
    "pattern_sum": ("#fff1dc", "#b35900", True),
    "identity": ("#ffffff", INK, False),
    "ones": ("#eceff1", INK, False),
    "dot": (INK, INK, False),
}
