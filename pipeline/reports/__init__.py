"""Reports of the stages: JSON, Markdown and plots, from manifests."""
