"""Figures: ``draw_*(ax, ...)`` functions that draw on a given Axes and return it (DESIGN.md sec. 5).

The caller owns the figure (:func:`new_figure`) and decides where it goes
(:func:`save_figure`, :func:`svg_bytes` for the HTML report).
"""

from landscape.plots.flatness import (
                                      draw_correlation,
                                      draw_fig2_1d,
                                      draw_fig2_2d,
                                      draw_local_energy,
                                      draw_local_energy_groups,
)
from landscape.plots.slices import draw_slice_1d, draw_slice_contour, draw_slice_heatmap, draw_slice_surface
from landscape.plots.spectrum import (
                                      default_center_width,
                                      draw_density,
                                      draw_diagonal,
                                      draw_eigenspectrum,
                                      draw_ritz_values,
)
from landscape.plots.style import color_for, new_figure, png_bytes, save_figure, style, svg_bytes
from landscape.plots.training import draw_training_curves, seed_band

__all__ = [
    "color_for", "new_figure", "png_bytes", "save_figure", "style", "svg_bytes",
    "default_center_width", "draw_density", "draw_diagonal", "draw_eigenspectrum", "draw_ritz_values",
    "draw_training_curves", "seed_band",
    "draw_correlation", "draw_fig2_1d", "draw_fig2_2d", "draw_local_energy", "draw_local_energy_groups",
    "draw_slice_1d", "draw_slice_contour", "draw_slice_heatmap", "draw_slice_surface",
]
