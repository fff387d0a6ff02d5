"""Data sources: procedural shapes, 2-D toy distributions (later: image folders, webdataset, buckets)."""
