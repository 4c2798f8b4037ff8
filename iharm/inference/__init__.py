"""Inference: predictor, evaluation, metrics, harmony score."""
