"""Accuracy harness: reference models trained here on data shipped inside packages, and their
evaluation as ONNX in onnxruntime (see ``docs/harness.md``)."""

from spa.harness.data import DATASETS, Dataset, load_dataset
from spa.harness.evaluate import accuracy_onnx, accuracy_torch
from spa.harness.finetune import channel_masks, finetune_pruned
from spa.harness.models import HARNESS_MODELS, build_model
from spa.harness.train import HarnessCase, load_case, train_model

__all__ = [
    "DATASETS",
    "HARNESS_MODELS",
    "Dataset",
    "HarnessCase",
    "accuracy_onnx",
    "accuracy_torch",
    "build_model",
    "channel_masks",
    "finetune_pruned",
    "load_case",
    "load_dataset",
    "train_model",
]
