"""Preprocessing of a photo: foreground, recentring, depth and caption."""
