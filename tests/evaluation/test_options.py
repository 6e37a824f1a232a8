"""The evaluation options are the evaluation package's dataclass, embedded by the config and
passed to the evaluator as one object."""

from __future__ import annotations

import pytest
import torch

from adasp.engine.builders import build_evaluator
from adasp.engine.config import load_config
from adasp.engine.typed_config import ConfigError
from adasp.evaluation import evaluate_features
from adasp.evaluation.options import EvaluationOptions, RankingOptions


def test_the_config_embeds_the_options_and_the_builder_passes_them_whole():
    config = load_config(None, ["eval.rerank=true", "eval.chunk_size=7", "eval.flip=true"])
    assert isinstance(config.eval, EvaluationOptions)
    evaluator = build_evaluator(config, test_sets=[])
    assert evaluator.ranking == RankingOptions(rerank=True, chunk_size=7)
    assert evaluator.flip is True


def test_chunk_size_changes_memory_not_results():
    torch.manual_seed(0)
    q, g = torch.randn(10, 8), torch.randn(30, 8)
    q_pids, g_pids = torch.arange(10) % 5, torch.arange(30) % 5
    q_cams, g_cams = torch.zeros(10, dtype=torch.long), torch.ones(30, dtype=torch.long)
    whole = evaluate_features(q, g, q_pids, g_pids, q_cams, g_cams, **RankingOptions().keywords())
    blocks = evaluate_features(
        q, g, q_pids, g_pids, q_cams, g_cams, **RankingOptions(chunk_size=3).keywords()
    )
    assert whole["mAP"] == pytest.approx(blocks["mAP"])
    assert torch.equal(torch.as_tensor(whole["cmc"]), torch.as_tensor(blocks["cmc"]))


def test_a_bad_option_names_its_config_key():
    with pytest.raises(ConfigError, match=r"'eval\.chunk_size' must be >= 1 or null, got 0"):
        load_config(None, ["eval.chunk_size=0"])
