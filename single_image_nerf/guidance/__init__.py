"""Guidance: frozen priors that shape the unseen views (score distillation and friends)."""
