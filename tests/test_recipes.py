"""Every shipped recipe loads, and the methods of one dataset x size share backbone and budget."""

from __future__ import annotations

import itertools

import pytest

from medpfgm.config import METHODS, default_recipe, load_recipe
from medpfgm.data import DATASETS, SIZES


@pytest.mark.parametrize("dataset,size", list(itertools.product(DATASETS, SIZES)))
def test_methods_share_backbone_and_budget(dataset, size):
    cfgs = {m: load_recipe(default_recipe(m, dataset, size)) for m in METHODS}
    for method, cfg in cfgs.items():
        assert (cfg.method, cfg.dataset, cfg.size) == (method, dataset, size)
        assert len(cfg.net.channels) == len(cfg.net.attention_levels)
        assert size % 2 ** (len(cfg.net.channels) - 1) == 0  # every level halves H, W exactly
    reference = cfgs["pfgm"]
    for cfg in cfgs.values():
        assert cfg.net == reference.net and cfg.train == reference.train
