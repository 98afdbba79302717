"""Self-contained HTML reports from run directories (``landscape report``)."""

from landscape.report.collect import collect, flatness_scalars
from landscape.report.render import build_report, render_report

__all__ = ["build_report", "collect", "flatness_scalars", "render_report"]
