"""Models: the coarse hash-grid radiance field and its renderer."""
