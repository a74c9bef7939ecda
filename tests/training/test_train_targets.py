"""Frozen-model targets are computed once and cached with the model's name and weights hash; a mismatch is refused."""

from __future__ import annotations

import pytest
import torch

from neuroimagen.training.train.targets import TargetCacheError, cached_targets, clip_image_targets


def test_cache_is_computed_once_and_refuses_another_model(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"t": torch.arange(6.0).reshape(2, 3)}

    a = cached_targets(tmp_path / "c.safetensors", "enc", "abc", compute)
    b = cached_targets(tmp_path / "c.safetensors", "enc", "abc", compute)
    assert len(calls) == 1 and torch.equal(a["t"], b["t"])
    with pytest.raises(TargetCacheError, match="model_sha256: cache 'abc' != requested 'xyz'"):
        cached_targets(tmp_path / "c.safetensors", "enc", "xyz", compute)
    with pytest.raises(TargetCacheError, match="model_name"):
        cached_targets(tmp_path / "c.safetensors", "other", "abc", compute)


def test_clip_targets_from_a_tiny_local_clip(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8, projection_dim=8)
    torch.manual_seed(0)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "clip")
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    emb = clip_image_targets(tmp_path / "clip", images, tmp_path / "cache.safetensors")
    assert emb.shape == (3, 8)
    assert torch.equal(clip_image_targets(tmp_path / "clip", images, tmp_path / "cache.safetensors"), emb)
    # the same folder name with other weights: refused
    torch.manual_seed(1)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "clip")
    with pytest.raises(TargetCacheError, match="model_sha256"):
        clip_image_targets(tmp_path / "clip", images, tmp_path / "cache.safetensors")
