"""Pictures of results: metric plots (files) and label overlays (arrays for loggers)."""
from .overlay import blend_label, colorize_label, overlay_grid
from .plots import plot_curve, plot_per_class

__all__ = ["blend_label", "colorize_label", "overlay_grid", "plot_curve", "plot_per_class"]
