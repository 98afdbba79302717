"""Loss-landscape slices: the loss and error of a network on 1-D and 2-D grids of weights.

``directions`` picks the directions (random filter-normalised as Li et al. 2018, Hessian
eigenvectors, the straight line to another run), ``grid`` evaluates the grid batched
over parameter points, ``stage`` is ``landscape slice`` (files in ``RUN/slice-NAME/``).
"""

from landscape.slices.directions import (
    Direction,
    filter_normalize,
    hessian_directions,
    interpolation_direction,
    random_direction,
    weights_of,
)
from landscape.slices.grid import (
    Grid,
    PointValues,
    evaluate_points,
    evaluate_points_loop,
    interpolation_grid,
    square_grid,
)
from landscape.slices.stage import SliceConfig, barrier_height, compute_slice, find_slices, read_slice

__all__ = [
    "Direction", "filter_normalize", "hessian_directions", "interpolation_direction", "random_direction", "weights_of",
    "Grid", "PointValues", "evaluate_points", "evaluate_points_loop", "interpolation_grid", "square_grid",
    "SliceConfig", "barrier_height", "compute_slice", "find_slices", "read_slice",
]
