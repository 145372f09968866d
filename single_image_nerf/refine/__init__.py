"""Refine stage: coarse field to Gaussians, refined with gsplat."""
