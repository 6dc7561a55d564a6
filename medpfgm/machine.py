"""The machine a result was measured on, for the 'measured on' lines of records and pages."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def machine() -> str:
    """The CPU model and core count (and GPU when one is used), e.g. 'AMD EPYC 9454 48-Core Processor, 2 cores, torch 2.14.1'."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{model}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"
