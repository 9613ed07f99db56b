"""Embedding models: implicit ALS, BPR and LMF behind one ``train`` function."""

from recsys.models.train import Embeddings, model_param_names, train

__all__ = ["Embeddings", "model_param_names", "train"]
