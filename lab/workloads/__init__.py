"""Workloads: the synthetic trace generator (Transformer, CNN, MLP, MoE) and captures of real model code.

``generator`` needs only numpy and pandas; ``capture`` and ``models`` import torch and transformers, so they are
loaded on first use (``lab.capture_model``, ``lab.capture_trace``).
"""
