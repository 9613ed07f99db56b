"""Interactions: validation, id maps, CSR build and the synthetic sample generator."""

from recsys.data.interactions import IdMap, Interactions, build_interactions
from recsys.data.synthetic import generate_interactions

__all__ = ["IdMap", "Interactions", "build_interactions", "generate_interactions"]
