"""Workflows: the multi-step jobs built from the pieces below them (members → ensemble → bundle)."""
