"""Data: the single-image dataparser, novel-camera sampling and the datamanager."""
