"""Image-folder evaluation, the stimulus classifier, JSON + PNG reports and the `eval` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw
from torch import nn

from neuroimagen.realtime.cli import main
from neuroimagen.training.eval.images import load_image, match_by_stem
from neuroimagen.training.eval.nway import (
    StimulusClassifier,
    load_classifier,
    save_classifier,
    train_stimulus_classifier,
)
from neuroimagen.training.eval.report import evaluate_images, make_grid, write_json

N_CLASSES = 6
SHAPES = ["disc", "square", "triangle", "stripes", "dots", "ring"]


def draw_stimulus(cls: int, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """One synthetic stimulus: the class is the shape; colour, position and size are random
    (as in the twin, whose classifier must ignore hue)."""
    bg = rng.integers(60, 150)
    arr = np.full((size, size, 3), bg, dtype=np.float64) + rng.normal(0, 8, (size, size, 3))
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    if max(colour) - min(colour) < 80:  # keep it visible against the grey background
        colour = (colour[0], 255 - colour[0] // 2, 0)
    r = int(rng.integers(10, 16))
    cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, 2))
    box = [cx - r, cy - r, cx + r, cy + r]
    shape = SHAPES[cls]
    if shape == "disc":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "stripes":
        for y in range(cy - r, cy + r, 6):
            d.rectangle([cx - r, y, cx + r, y + 2], fill=colour)
    elif shape == "dots":
        for y in range(cy - r, cy + r, 7):
            for x in range(cx - r, cx + r, 7):
                d.ellipse([x, y, x + 3, y + 3], fill=colour)
    else:
        d.ellipse(box, outline=colour, width=4)
    return img


def make_twin(root: Path, n_per_class: int = 10, seed: int = 0) -> Path:
    """A miniature twin layout: root/images/<wnid>/<wnid>_<i>.JPEG + root/twin.json."""
    rng = np.random.default_rng(seed)
    wnids = [f"n9{i:07d}" for i in range(N_CLASSES)]
    for c, wnid in enumerate(wnids):
        folder = root / "images" / wnid
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            draw_stimulus(c, rng).save(folder / f"{wnid}_{i}.JPEG", quality=95)
    names = [f"{s} class" for s in SHAPES]
    (root / "twin.json").write_text(json.dumps({"labels": wnids, "class_names": names}))
    return root


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    return make_twin(tmp_path_factory.mktemp("twin"))


@pytest.fixture(scope="module")
def classifier(twin) -> StimulusClassifier:
    return train_stimulus_classifier(twin, image_size=32, n_epochs=60, seed=0)


def test_stimulus_classifier_learns_the_twin_and_generalises(classifier, twin, tmp_path):
    assert classifier.class_ids == [f"n9{i:07d}" for i in range(N_CLASSES)]
    assert classifier.class_names[0] == "disc class"  # from twin.json
    # fresh stimuli it never saw
    held_out = make_twin(tmp_path / "fresh", n_per_class=8, seed=123)
    files = sorted((held_out / "images").rglob("*.JPEG"))
    x = torch.stack([load_image(f) for f in files])
    y = torch.tensor([int(f.parent.name[2:]) for f in files])
    with torch.no_grad():
        acc = (classifier(x).argmax(1) == y).float().mean().item()
    assert acc > 0.8, acc


@pytest.mark.slow
def test_stimulus_classifier_on_the_twins_own_stimuli(tmp_path):
    """The real twin renderer (shape x style; hue, position, size, rotation vary)."""
    stimuli = pytest.importorskip("neuroimagen.training.data.twin.stimuli")
    n_classes = 10

    def render(root, n_per_class, seed):
        layouts = stimuli.sample_layouts(n_classes * n_per_class, np.random.default_rng(seed))
        for i, lay in enumerate(layouts):
            wnid = stimuli.class_wnids(n_classes)[i // n_per_class]
            (root / "images" / wnid).mkdir(parents=True, exist_ok=True)
            stimuli.render_image(i // n_per_class, lay, 64).save(
                root / "images" / wnid / f"{wnid}_{i}.JPEG"
            )
        return root

    clf = train_stimulus_classifier(
        render(tmp_path / "train", 12, 0), image_size=32, n_epochs=50, seed=0
    )
    test = render(tmp_path / "test", 10, 1)
    files = sorted((test / "images").rglob("*.JPEG"))
    x = torch.stack([load_image(f) for f in files])
    y = torch.tensor([clf.class_ids.index(f.parent.name) for f in files])
    with torch.no_grad():
        acc = (clf(x).argmax(1) == y).float().mean().item()
    assert acc > 0.5, acc  # chance is 0.1 (0.78 when written)


def test_classifier_save_load_roundtrip(classifier, tmp_path):
    path = save_classifier(classifier, tmp_path / "clf")
    assert (path / "config.json").is_file()
    loaded = load_classifier(path)
    x = torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), classifier(x))
    assert loaded.class_names == classifier.class_names
    from neuroimagen.training.models.format import ModelFormatError

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text('{"_class_name": "PixelEncoder"}')
    with pytest.raises(ModelFormatError, match="holds a PixelEncoder, not a StimulusClassifier"):
        load_classifier(tmp_path / "junk")


def reconstruction_dirs(twin: Path, root: Path, wrong: bool) -> tuple[Path, Path, Path]:
    """gt/, pred/ (noisy copies, or copies of another class when ``wrong``), saliency/."""
    rng = np.random.default_rng(5)
    gt_dir, pred_dir, sal_dir = root / "gt", root / "pred", root / "sal"
    for d in (gt_dir, pred_dir, sal_dir):
        d.mkdir(parents=True)
    wnids = sorted(p.name for p in (twin / "images").iterdir())
    for c, wnid in enumerate(wnids):
        for i in range(3):
            src = twin / "images" / wnid / f"{wnid}_{i}.JPEG"
            stem = src.stem
            Image.open(src).save(gt_dir / f"{stem}.JPEG")
            if wrong:
                other = wnids[(c + 1) % len(wnids)]
                arr = np.asarray(Image.open(twin / "images" / other / f"{other}_{i + 5}.JPEG"))
            else:
                arr = np.asarray(Image.open(src)).astype(np.float64) + rng.normal(
                    0, 10, (48, 48, 3)
                )
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(pred_dir / f"{stem}.png")
            heat = np.zeros((48, 48, 3), dtype=np.uint8)
            heat[..., 0] = np.linspace(0, 255, 48, dtype=np.uint8)[None, :]
            Image.fromarray(heat).save(sal_dir / f"{stem}.png")
    return gt_dir, pred_dir, sal_dir


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 5, stride=2), nn.GELU(), nn.Conv2d(16, 16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(2, 3))


def test_evaluate_good_vs_wrong_reconstructions(twin, classifier, tmp_path):
    enc = TinyEncoder()
    kwargs = dict(
        classifier=classifier,
        n_way=N_CLASSES,
        n_trials=10,
        clip_encoder=enc,
        feature_extractor=enc,
        is_extractor=classifier,
        image_size=48,
    )
    good = evaluate_images(*reconstruction_dirs(twin, tmp_path / "good", wrong=False), **kwargs)
    bad = evaluate_images(*reconstruction_dirs(twin, tmp_path / "bad", wrong=True), **kwargs)
    assert good["n_pairs"] == bad["n_pairs"] == 3 * N_CLASSES
    assert good["ssim"]["mean"] > 0.5 > bad["ssim"]["mean"]
    assert good["pcc"]["mean"] > 0.8 > bad["pcc"]["mean"]
    assert good["n_way"]["mean"] > 0.9 and bad["n_way"]["mean"] < 0.3
    assert good["clip_similarity"]["mean"] > bad["clip_similarity"]["mean"]
    assert good["fid"] < bad["fid"]
    assert good["inception_score"]["mean"] > 1.0
    assert good["retrieval"]["n_candidates"] == 3 * N_CLASSES
    assert good["skipped"] == {}
    row = good["per_image"][0]
    assert set(row) >= {"stem", "ssim", "pcc", "n_way_acc", "true_class", "clip_similarity"}
    assert row["true_class"].endswith("class")


def test_evaluate_with_nothing_optional_and_n_way_clamped(twin, classifier, tmp_path, caplog):
    gt, pred, _ = reconstruction_dirs(twin, tmp_path, wrong=False)
    rep = evaluate_images(gt, pred, image_size=32)
    assert set(rep["skipped"]) == {"n_way", "clip", "fid", "inception_score"}
    assert "n_way" not in rep and "fid" not in rep
    with caplog.at_level("WARNING"):
        rep = evaluate_images(gt, pred, classifier=classifier, n_way=50, n_trials=2, image_size=32)
    assert rep["n_way"]["n_way"] == N_CLASSES and rep["n_way"]["requested_n_way"] == 50
    assert "6-way instead of 50-way" in caplog.text


def test_match_by_stem_lists_the_unmatched(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for stem in ("x1", "x2", "x3"):
        Image.new("RGB", (16, 16)).save(a / f"{stem}.JPEG")
    for stem in ("x2", "x3", "y9"):
        Image.new("RGB", (16, 16)).save(b / f"{stem}.png")
    pairs = match_by_stem(a, b)
    assert pairs.stems == ["x2", "x3"]
    assert pairs.unmatched_gt == ["x1"] and pairs.unmatched_pred == ["y9"]
    c = tmp_path / "c"
    c.mkdir()
    Image.new("RGB", (16, 16)).save(c / "zz.png")
    with pytest.raises(ValueError, match="no image stems in common"):
        match_by_stem(a, c)


def test_json_report_is_strict_json(tmp_path):
    path = write_json(
        {"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(2)]}, tmp_path / "r.json"
    )
    assert json.loads(path.read_text()) == {"a": None, "b": 1.5, "c": [2]}


def test_grid_png_layout(tmp_path):
    rows = [
        {
            "gt": torch.full((3, 20, 20), 1.0),
            "saliency": torch.zeros(3, 20, 20) if i != 1 else None,
            "pred": torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 20, 20),
            "label": f"row {i}",
        }
        for i in range(3)
    ]
    path = make_grid(rows, tmp_path / "grid.png", cell=64)
    img = np.asarray(Image.open(path).convert("RGB"))
    pad, header, caption = 8, 22, 16
    assert img.shape[1] == pad + 3 * (64 + pad)
    assert img.shape[0] == header + 3 * (64 + caption + pad) + pad
    y = header + 32  # middle of the first row
    col = [pad + j * (64 + pad) + 32 for j in range(3)]
    assert tuple(img[y, col[0]]) == (255, 255, 255)  # ground truth: white
    assert tuple(img[y, col[1]]) == (0, 0, 0)  # saliency: black
    assert img[y, col[2]][0] > 200 and img[y, col[2]][1] < 50  # reconstruction: red
    y1 = header + (64 + caption + pad) + 5  # row 1 has no saliency: a grey placeholder
    assert tuple(img[y1, col[1]]) == (225, 225, 225)


def test_cli_train_classifier_then_eval_images(twin, tmp_path):
    gt, pred, sal = reconstruction_dirs(twin, tmp_path, wrong=False)
    clf_path = tmp_path / "clf"
    runner = CliRunner()
    res = runner.invoke(
        main, ["eval", "train-classifier", str(twin), "--out", str(clf_path), "--n-epochs", "20"]
    )
    assert res.exit_code == 0, res.output
    assert (clf_path / "config.json").is_file() and "6 classes" in res.output
    json_path, grid_path = tmp_path / "out" / "report.json", tmp_path / "out" / "grid.png"
    res = runner.invoke(
        main,
        [
            "eval",
            "images",
            "--gt",
            str(gt),
            "--pred",
            str(pred),
            "--saliency",
            str(sal),
            "--classifier",
            str(clf_path),
            "--n-way",
            "5",
            "--n-trials",
            "5",
            "--image-size",
            "48",
            "--json",
            str(json_path),
            "--grid",
            str(grid_path),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "5-way top-1" in res.output and "ssim" in res.output
    report = json.loads(json_path.read_text())
    assert report["n_pairs"] == 18 and report["n_way"]["n_way"] == 5
    assert report["grid"] == str(grid_path)
    grid = Image.open(grid_path)
    assert grid.format == "PNG" and grid.height > 16 * 48  # 16 rows at most, each >= one cell


def test_cli_eval_images_errors_are_clear(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    Image.new("RGB", (16, 16)).save(a / "x.png")
    Image.new("RGB", (16, 16)).save(b / "y.png")
    res = CliRunner().invoke(main, ["eval", "images", "--gt", str(a), "--pred", str(b)])
    assert res.exit_code == 1 and "no image stems in common" in res.output


def test_grid_rows_spread_over_the_report(tmp_path):
    from neuroimagen.training.eval.report import grid_rows_from_report

    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
        for i in range(10):
            Image.new("RGB", (8, 8)).save(tmp_path / d / f"s{i}.png")
    report = {"gt_dir": str(tmp_path / "gt"), "pred_dir": str(tmp_path / "pred"),
              "per_image": [{"stem": f"s{i}", "ssim": 0.5, "pcc": 0.1} for i in range(10)],
              "saliency": [None] * 10}
    first = [r["label"].split()[0] for r in grid_rows_from_report(report, 4)]
    spread = [r["label"].split()[0] for r in grid_rows_from_report(report, 4, spread=True)]
    assert first == ["s0", "s1", "s2", "s3"]
    assert spread == ["s0", "s3", "s6", "s9"]  # evenly from the first to the last
    assert len(grid_rows_from_report(report, 16, spread=True)) == 10
