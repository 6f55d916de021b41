"""A laid-out diagram -> PNG or PDF through matplotlib (imported only here, only when asked for)."""

from __future__ import annotations

from pathlib import Path

from tnconv.render.layout import FONT_SIZE, LINE_HEIGHT, MARGIN, Diagram
from tnconv.render.style import BACKGROUND, FILLS, INK, LABEL_BACKGROUND_OPACITY, LINE_WIDTH, OPEN_LEG

DPI = 150
_POINTS_PER_PIXEL = 0.75  # the layout's pixels are CSS pixels (1/96 inch)


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib import patches
        from matplotlib.path import Path as MplPath
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "writing PNG/PDF diagrams needs matplotlib (pip install matplotlib, or tnconv's draw extra); "
            "SVG and DOT need nothing"
        ) from error
    return plt, patches, MplPath


def write_raster(diagram: Diagram, path: Path) -> None:
    """Render ``diagram`` with matplotlib to ``path`` (format from its suffix: .png or .pdf)."""
    plt, patches, MplPath = _matplotlib()
    inches = (diagram.width / 96.0, diagram.height / 96.0)
    figure = plt.figure(figsize=inches, dpi=DPI)
    try:
        axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
        axes.set_xlim(0, diagram.width)
        axes.set_ylim(diagram.height, 0)
        axes.set_axis_off()
        figure.patch.set_facecolor(BACKGROUND)
        font = {"family": "monospace", "size": FONT_SIZE * _POINTS_PER_PIXEL}
        linewidth = LINE_WIDTH * _POINTS_PER_PIXEL
        open_legs = {line.leg for line in diagram.lines if line.dangling}
        for line in diagram.lines:
            colour = OPEN_LEG if line.dangling else INK
            vertices = [line.start, line.control, line.end]
            codes = [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3]
            axes.add_patch(
                patches.PathPatch(MplPath(vertices, codes), fill=False, edgecolor=colour, linewidth=linewidth,
                                  capstyle="round", zorder=1)
            )
        for node in diagram.nodes:
            if node.shape == "end":
                continue
            fill, stroke, dashed = FILLS[node.shape]
            box = node.box
            style = dict(facecolor=fill, edgecolor=stroke, linewidth=linewidth, zorder=2,
                         linestyle=(0, (4, 2)) if dashed else "solid")
            if node.shape == "dot":
                axes.add_patch(patches.Circle((box.x, box.y), box.half_width, **style))
                continue
            if node.shape == "data":
                axes.add_patch(patches.FancyBboxPatch(
                    (box.x - box.half_width, box.y - box.half_height), 2 * box.half_width, 2 * box.half_height,
                    boxstyle="round,pad=0,rounding_size=5", **style))
            else:
                axes.add_patch(patches.Ellipse((box.x, box.y), 2 * box.half_width, 2 * box.half_height, **style))
            axes.text(box.x, box.y, node.text, ha="center", va="center_baseline", fontdict=font,
                      fontweight="bold", color=INK, zorder=3)
        for label in diagram.labels:
            box = label.box
            axes.add_patch(patches.Rectangle(
                (box.x - box.half_width, box.y - box.half_height), 2 * box.half_width, 2 * box.half_height,
                facecolor=BACKGROUND, edgecolor="none", alpha=LABEL_BACKGROUND_OPACITY, zorder=4))
            colour = OPEN_LEG if label.leg in open_legs else INK
            axes.text(box.x, box.y, label.text, ha="center", va="center_baseline", fontdict=font, color=colour,
                      zorder=5)
        axes.text(MARGIN, diagram.height - MARGIN / 2 - LINE_HEIGHT / 2, diagram.caption, ha="left",
                  va="center_baseline", fontdict=font, color=OPEN_LEG)
        figure.savefig(path, dpi=DPI, facecolor=BACKGROUND, metadata=_metadata(path))
    finally:
        plt.close(figure)


def _metadata(path: Path) -> dict[str, object]:
    """Fixed metadata so that files do not change between runs."""
    if path.suffix.lower() == ".pdf":
        return {"CreationDate": None, "ModDate": None, "Creator": "tnconv", "Producer": "tnconv"}
    return {"Software": "tnconv"}
