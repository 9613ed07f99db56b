"""Embedding models: implicit ALS, BPR and LMF behind one ``train`` function."""

from recsys.models.train import Embeddings, fold_in_users, model_param_names, train

__all__ = ["Embeddings", "fold_in_users", "model_param_names", "train"]
