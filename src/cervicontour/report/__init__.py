"""Reports people look at: PNG overlays, cohort summaries, HTML pages."""
