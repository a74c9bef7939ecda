"""Captions: the shipped class-name map, templates, and precomputed caption files."""

from __future__ import annotations

import json

import pytest
import yaml

from neuroimagen.stream.config import shipped_config_path
from neuroimagen.training.data._io import DatasetFileError
from neuroimagen.training.data.captions import Captioner, load_captions_json, load_class_names


def test_shipped_map_covers_the_40_wordnet_ids():
    names = load_class_names()
    assert len(names) == 40
    assert all(k.startswith("n") and len(k) == 9 and k[1:].isdigit() for k in names)
    # the YAML is plain package data, readable without our code
    raw = yaml.safe_load(shipped_config_path("eeg_imagenet_classes.yaml").read_text())
    assert raw == names
    assert names["n02951358"] == "canoe" and names["n02510455"] == "giant panda"


def test_template_caption_and_unknown_class(caplog):
    cap = Captioner()
    assert cap("n02951358_31190", "n02951358") == "an image of a canoe"
    assert Captioner("a photo of {class_name}")("x", "n07753592") == "a photo of banana"
    with caplog.at_level("WARNING"):
        assert cap("n90000001_1", "n90000001") == "an image of a n90000001"
    assert "n90000001" in caplog.text
    with pytest.raises(ValueError, match="class_name"):
        Captioner("no placeholder")


def test_captions_file(tmp_path):
    path = tmp_path / "blip.json"
    path.write_text(json.dumps({"n02951358_31190": "a red canoe on a lake"}))
    cap = Captioner(captions_path=path)
    assert cap("n02951358_31190", "n02951358") == "a red canoe on a lake"
    cap.check(["n02951358_31190"])
    with pytest.raises(DatasetFileError, match=r"blip.json: no caption for 2 image\(s\): n0_1, n0_2"):
        cap.check(["n0_2", "n02951358_31190", "n0_1"])
    with pytest.raises(DatasetFileError, match="no caption for image 'n0_3'"):
        cap("n0_3", "n0")


@pytest.mark.parametrize(
    ("text", "match"),
    [("[1, 2]", "expected a JSON object"), ('{"a": 3}', "caption for 'a' is not a string"), ("{oops", "not valid JSON")],
)
def test_bad_captions_files(tmp_path, text, match):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(DatasetFileError, match=match):
        load_captions_json(path)


def test_class_names_file(tmp_path):
    path = tmp_path / "names.yaml"
    path.write_text("n90000000: red square\nn90000001: blue circle\n")
    assert load_class_names(path) == {"n90000000": "red square", "n90000001": "blue circle"}
    path.write_text("- a\n- b\n")
    with pytest.raises(DatasetFileError, match="mapping of class id -> name"):
        load_class_names(path)
