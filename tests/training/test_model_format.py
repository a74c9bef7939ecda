"""The one model format: config.json + safetensors, loaded strictly."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderTiny, ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from safetensors.torch import load_file, save_file

from neuroimagen.training.models.format import (
    WEIGHTS_NAME,
    ModelFormatError,
    file_sha256,
    load_model,
    save_model,
)


class _Tiny(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, n_in: int = 4, n_out: int = 3):
        super().__init__()
        self.lin = torch.nn.Linear(n_in, n_out)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = _Tiny(4, 3)
    return model, save_model(model, tmp_path / "m")


def test_round_trip_is_exact(saved):
    model, path = saved
    loaded = load_model(_Tiny, path)
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_diffusers_model_round_trip(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderTiny(
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4,
    )
    loaded = load_model(AutoencoderTiny, save_model(vae, tmp_path / "vae"))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x).latents, vae.eval().encode(x).latents)


def test_missing_tensor_is_refused_by_name(saved):
    _, path = saved
    state = load_file(str(path / WEIGHTS_NAME))
    del state["lin.bias"]
    save_file(state, str(path / WEIGHTS_NAME))
    with pytest.raises(ModelFormatError, match=r"missing tensors: lin\.bias"):
        load_model(_Tiny, path)


def test_unexpected_and_misshaped_tensors_are_refused(saved):
    _, path = saved
    state = load_file(str(path / WEIGHTS_NAME))
    state["extra.weight"] = torch.zeros(2)
    state["lin.weight"] = torch.zeros(3, 5)
    save_file(state, str(path / WEIGHTS_NAME))
    with pytest.raises(ModelFormatError) as err:
        load_model(_Tiny, path)
    assert "unexpected tensors: extra.weight" in str(err.value)
    assert "lin.weight (3, 5) != (3, 4)" in str(err.value)


def test_config_of_other_class_or_unknown_key_is_refused(saved):
    _, path = saved
    cfg_path = path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "n_hidden": 8}))
    with pytest.raises(ModelFormatError, match="unknown config key.*n_hidden"):
        load_model(_Tiny, path)
    assert load_model(_Tiny, path, strict_config=False) is not None
    cfg_path.write_text(json.dumps({**cfg, "_class_name": "Other"}))
    with pytest.raises(ModelFormatError, match="holds a Other, not a _Tiny"):
        load_model(_Tiny, path)


def test_missing_folder_or_weights(tmp_path, saved):
    with pytest.raises(ModelFormatError, match="model folder not found"):
        load_model(_Tiny, tmp_path / "nope")
    _, path = saved
    (path / WEIGHTS_NAME).unlink()
    with pytest.raises(ModelFormatError, match="no safetensors file"):
        load_model(_Tiny, path)


def test_corrupt_weights_named(saved):
    _, path = saved
    (path / WEIGHTS_NAME).write_bytes(b"\x00" * 16)
    with pytest.raises(ModelFormatError, match="unreadable safetensors"):
        load_model(_Tiny, path)


def test_sha256_changes_with_one_byte(saved):
    _, path = saved
    f = path / WEIGHTS_NAME
    before = file_sha256(f)
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    assert file_sha256(f) != before


def test_a_folder_loads_as_the_class_its_config_names_or_is_refused_by_name(tmp_path):
    from neuroimagen.training.models.bundle import load_model_folder
    from neuroimagen.training.models.pixel import FeaturePixelEncoder, PixelEncoder
    from neuroimagen.training.models.semantic import FeatureSemanticExtractor, SemanticExtractor

    torch.manual_seed(0)
    vae = AutoencoderTiny(encoder_block_out_channels=(8,), decoder_block_out_channels=(8,),
                          num_encoder_blocks=(1,), num_decoder_blocks=(1,), latent_channels=4)
    folder = save_model(vae, tmp_path / "vae")
    loaded = load_model_folder(folder)
    assert type(loaded) is AutoencoderTiny and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vae.state_dict().values(),
                                                 strict=True))
    assert type(load_model_folder(folder, (AutoencoderTiny,))) is AutoencoderTiny
    with pytest.raises(ValueError, match=r"holds a AutoencoderTiny, not a pixel encoder \(PixelEncoder, "
                                         r"FeaturePixelEncoder\)"):
        load_model_folder(folder, (PixelEncoder, FeaturePixelEncoder), "a pixel encoder")
    with pytest.raises(ValueError, match="not a semantic extractor"):
        load_model_folder(folder, (SemanticExtractor, FeatureSemanticExtractor), "a semantic extractor")
