"""Datasets, EEG encoders, losses, trainers and evaluation.

``training.models`` holds every model and the inference-time frame; it imports
only torch and diffusers' model/scheduler classes so realtime and export can use it.
"""
