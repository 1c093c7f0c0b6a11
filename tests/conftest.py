"""Shared test setup: hypothesis profiles (``LORA_THEORY_PROFILE``), the gpu marker, threads."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lora_theory.strategies import register_profiles

PROFILE = register_profiles()
# subprocesses started by tests (kill -9 tests, `python -m lora_theory`) import this checkout and
# tests.sweeps.probes, whatever their working directory
_ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)
torch.set_num_threads(2)


def pytest_report_header(config):
    return f"hypothesis profile: {PROFILE} (set LORA_THEORY_PROFILE=dev|ci|thorough)"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
