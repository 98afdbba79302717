"""The figures draw the data they are given: checked on the artists, against known inputs."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from landscape.plots import (draw_correlation, draw_diagonal, draw_eigenspectrum, draw_local_energy,
                             draw_training_curves, new_figure, seed_band, svg_bytes)


def _hist_total(ax) -> float:
    """Sum of the bar heights of step histograms drawn on ``ax`` (one Polygon per run)."""
    totals = []
    for patch in ax.patches:
        xy = patch.get_xy()
        # a step polygon visits (edge, height) pairs: heights are the y of every other vertex
        heights = xy[1:-1:2, 1]
        totals.append(heights.sum())
    return totals


def test_eigenspectrum_counts_and_annotations():
    # 100 eigenvalues: 70 at |lambda| < 1e-5, 10 in the window, 15 positive and 5 negative tail values
    lam = np.concatenate([np.full(70, 1e-7), np.linspace(-0.004, 0.004, 10), np.linspace(0.5, 1.0, 15),
                          np.linspace(-0.3, -0.1, 5)])
    fig, ax = new_figure()
    draw_eigenspectrum(ax, [lam], ["sgd"], center_width=0.01)
    central = _hist_total(ax)
    assert central == [80]
    insets = [child for child in ax.child_axes]
    assert len(insets) == 2
    negative, positive = insets
    assert _hist_total(negative) == [5] and _hist_total(positive) == [15]
    text = "\n".join(t.get_text() for t in ax.texts)
    assert "|λ|<1e-5: 70.0%" in text and "|λ|<1e-4: 70.0%" in text  # the 10 window values are >= 4/9e-3
    assert "λmax = 1," in text and "λmin = -0.3" in text
    assert not any(t.get_fontfamily() == ["monospace"] for t in ax.texts)
    assert min(t.get_fontsize() for t in ax.texts) >= 7
    # headroom: the central peak (70 + 1 in one bin) stays well below the top of the frame
    assert ax.get_ylim()[1] >= 10 * 71
    svg = svg_bytes(fig)
    assert svg.startswith(b"<svg") and b"http://www.w3.org/2000/svg" in svg  # namespace only, no metadata
    assert b"<metadata>" not in svg and b"creativecommons" not in svg


def test_eigenspectrum_rejects_empty_and_mismatched_labels():
    fig, ax = new_figure()
    with pytest.raises(ValueError):
        draw_eigenspectrum(ax, [np.array([])])
    with pytest.raises(ValueError):
        draw_eigenspectrum(ax, [np.ones(3), np.ones(3)], ["one"])


def test_seed_band_uses_common_x_and_min_max():
    a = [{"effective_epochs": 0, "test_error": 0.9}, {"effective_epochs": 20, "test_error": 0.1},
         {"effective_epochs": 40, "test_error": 0.05}]
    b = [{"effective_epochs": 0, "test_error": 0.8}, {"effective_epochs": 20, "test_error": 0.3}]  # stopped early
    xs, mean, low, high, n = seed_band([a, b], "test_error")
    np.testing.assert_allclose(xs, [0, 20])
    np.testing.assert_allclose(mean, [0.85, 0.2])
    np.testing.assert_allclose(low, [0.8, 0.1])
    np.testing.assert_allclose(high, [0.9, 0.3])
    assert n == 2


def test_training_curves_plot_percent_against_effective_epochs():
    rows = [{"epoch": e, "effective_epochs": 20.0 * e, "val_error": 0.5 / (e + 1)} for e in range(4)]
    fig, ax = new_figure()
    draw_training_curves(ax, {"entropy-sgd": [rows]}, "val_error")
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), [20, 40, 60])  # epoch 0 left out
    np.testing.assert_allclose(line.get_ydata(), [25.0, 50 / 3, 12.5])
    assert ax.get_xlabel() == "effective epochs"


def test_local_energy_draws_delta_with_stderr():
    result = {"sigmas": [0.0, 0.1, 0.2], "noise": "multiplicative",
              "delta": {"train": {"loss": [0.0, 0.01, 0.04]}}, "stderr": {"train": {"loss": [0.0, 0.001, 0.002]}}}
    fig, ax = new_figure()
    draw_local_energy(ax, {"sgd": result})
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [0.0, 0.01, 0.04])
    assert "w(1+σz)" in ax.get_xlabel()


def test_correlation_title_has_kendall_tau():
    fig, ax = new_figure()
    draw_correlation(ax, [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.4, 0.3], name="λmax", labels=["sgd", "sgd", "sam", "sam"])
    assert "Kendall τ = +0.67" in ax.get_title()  # 5 concordant, 1 discordant of 6 pairs
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    np.testing.assert_allclose(sorted(offsets[:, 1]), [10, 20, 30, 40])  # errors in percent


def test_diagonal_counts_zero_entries():
    fig, ax = new_figure()
    draw_diagonal(ax, [np.array([0.0, 0.0, 1e-3, 1e-2])], ["sgd"])
    assert "50.0% exactly 0" in ax.get_legend().get_texts()[0].get_text()
    assert _hist_total(ax) == [2]


def test_new_figure_is_not_registered_with_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig, _ = new_figure()
    assert isinstance(fig, Figure) and plt.get_fignums() == before


def test_ritz_values_are_paired_with_the_nearest_exact_eigenvalue():
    from landscape.plots import draw_ritz_values

    exact = np.array([-0.35, -0.3, -0.21, 0.1, 0.7, 0.8, 2.1, 3.2])
    fig, ax = new_figure()
    draw_ritz_values(ax, np.array([-0.2101, -0.3499]), np.array([1e-6, 1e-6]), exact=exact)  # --which SA
    exact_line = [line for line in ax.get_lines() if line.get_label() == "nearest exact eigenvalue"][0]
    np.testing.assert_allclose(exact_line.get_ydata(), [-0.21, -0.35])


def test_exact_histogram_is_normalised_by_all_eigenvalues_on_the_log_grid():
    from landscape.plots import draw_density

    exact = np.concatenate([np.zeros(60), np.full(40, 1e-2)])  # 60 exact zeros cannot go on a log axis
    fig, ax = new_figure()
    draw_density(ax, np.linspace(-3, -1, 5), np.zeros(5), scale="log", exact=exact, floor=1e-12)
    (stairs,) = [p for p in ax.patches]
    values, edges = stairs.get_data().values, stairs.get_data().edges
    assert float(np.sum(values * np.diff(edges))) == pytest.approx(0.4)  # the 40% that are drawn
    # what the panel cannot show is said ON the figure, with the counts
    assert any("60 of 100 exact eigenvalues not shown" in t.get_text() for t in ax.texts)


def test_eigenspectrum_without_a_tail_draws_no_empty_inset():
    lam = np.concatenate([np.full(50, 1e-7), np.linspace(0.5, 1.0, 5)])  # nothing negative
    fig, ax = new_figure()
    draw_eigenspectrum(ax, [lam], ["sgd"], center_width=0.01)
    assert len(ax.child_axes) == 1  # the positive tail only
    assert any("no negative eigenvalue beyond" in t.get_text() for t in ax.texts)


def test_optimizers_have_distinct_colour_blind_safe_colours_and_markers():
    from matplotlib.colors import to_rgb

    from landscape.plots.style import OKABE_ITO, OPTIMIZER_COLORS, OPTIMIZER_MARKERS, color_for, marker_for

    palette = {to_rgb(c) for c in OKABE_ITO.values()}
    colours = [tuple(c) for c in OPTIMIZER_COLORS.values()]
    assert set(colours) <= palette and len(set(colours)) == len(colours)
    assert set(OPTIMIZER_MARKERS) == set(OPTIMIZER_COLORS)
    assert len(set(OPTIMIZER_MARKERS.values())) == len(OPTIMIZER_MARKERS)
    # Entropy-SGD and SAM: far apart in lightness too (they were two similar pastel hues)
    def lightness(c):
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    assert abs(lightness(color_for("entropy-sgd")) - lightness(color_for("sam"))) > 0.25
    assert marker_for("entropy-sgd (lr=1)") != marker_for("sam (lr=0.1)")
    assert color_for("entropy-sgd") != color_for("sgd")  # the longest matching name wins


def test_curves_carry_their_optimizer_markers_and_legends_stay_outside_the_axes():
    rows = [{"epoch": e, "effective_epochs": e, "val_error": 0.1} for e in range(3)]
    fig, ax = new_figure()
    draw_training_curves(ax, {"entropy-sgd": [rows], "sam": [rows]}, "val_error")
    assert [line.get_marker() for line in ax.get_lines()] == ["s", "X"]
    fig.canvas.draw()
    legend, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= frame.x1  # beside the axes, not over the curves


def test_correlation_axis_takes_the_power_of_ten_into_its_label():
    fig, ax = new_figure()
    draw_correlation(ax, [1e-4, 2e-4, -3e-4, 5e-4], [0.1, 0.2, 0.3, 0.4], name="ΔL σ=0.01")
    assert ax.get_xlabel() == "ΔL σ=0.01 (×1e-4)"
    fig.canvas.draw()
    assert ax.xaxis.get_offset_text().get_text() == ""  # no offset text to collide with the label
    assert len(ax.get_xticks()) <= 6


def test_groups_of_one_optimizer_get_different_line_styles():
    rows = [{"epoch": e, "effective_epochs": e, "val_error": 0.1} for e in range(3)]
    fig, ax = new_figure()
    draw_training_curves(ax, {"sgd (lr=0.1)": [rows], "sgd (lr=0.01)": [rows]}, "val_error")
    a, b = ax.get_lines()
    assert a.get_color() == b.get_color() and a.get_linestyle() != b.get_linestyle()


def test_correlation_title_carries_the_granulated_tau():
    fig, ax = new_figure()
    draw_correlation(ax, [1.0, 2.0, 3.0], [0.1, 0.2, 0.3], name="m", granulated={"lr": 0.5, "Psi": 0.5})
    assert ax.get_title().splitlines()[-1] == "ψ lr +0.50, Ψ +0.50"


def test_local_energy_groups_average_runs_of_one_optimizer():
    from landscape.plots import draw_local_energy_groups

    def result(scale):
        return {"sigmas": [0.0, 0.1], "delta": {"train": {"loss": [0.0, scale]}}, "noise": "multiplicative"}

    fig, ax = new_figure()
    draw_local_energy_groups(ax, {"sgd": [result(0.1), result(0.3)], "sam": [result(0.05)]})
    sgd, sam = ax.get_lines()
    np.testing.assert_allclose(sgd.get_ydata(), [0.0, 0.2])
    np.testing.assert_allclose(sam.get_ydata(), [0.0, 0.05])
    assert sgd.get_label() == "sgd (2 runs)"
