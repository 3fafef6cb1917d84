"""Reports: escaped HTML heatmaps, terminal views, markdown tables, plots."""
