"""Evaluation without downloads: classifier, metrics, load_generator, `ae-ot evaluate` (`ae-ot compare`:
tests/test_compare.py)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ae_ot.checkpoint import load_generator
from ae_ot.evaluation import (
    check_images,
    density_coverage,
    evaluate_samples,
    extract_features,
    fid_from_features,
    frechet_distance,
    get_reference,
    kl_to_uniform,
    minibatch_w2,
    mode_stats,
    precision_recall,
)
from ae_ot.generators.base import GenerativeModel


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = (k / k.sum())
    c = images.shape[1]
    out = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return out.clamp(0, 1)


class OneDigit(GenerativeModel):
    """A 'generator' that only ever emits real test images of one digit."""

    def __init__(self, images):
        super().__init__(latent_dim=1)
        self.pool = images

    def generate(self, n, generator):
        return self.pool[torch.randint(0, self.pool.shape[0], (n,), generator=generator)]


# --------------------------------------------------------------------------------------------
# Metric arithmetic (no classifier)
# --------------------------------------------------------------------------------------------
def test_frechet_distance_known_cases():
    # 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(5.0)
    # commuting (diagonal) covariances: ||dm||^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.0])
    expected = 3 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b)) == pytest.approx(expected)
    # general SPD matrices: agrees with scipy's sqrtm formula
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    A, B = A @ A.T, B @ B.T
    mu = rng.normal(size=6)
    expected = (mu ** 2).sum() + np.trace(A + B - 2 * sqrtm(A @ B).real)
    assert frechet_distance(mu, A, np.zeros(6), B) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu, A, mu, A) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_fid_from_features_shifted_gaussian():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 4, generator=g)
    y = torch.randn(20000, 4, generator=g) + torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert fid_from_features(x, y) == pytest.approx(1.0, abs=0.03)
    assert fid_from_features(x, torch.randn(20000, 4, generator=g)) < 0.01


def test_precision_recall_density_coverage_synthetic():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 8, generator=g)
    same = torch.randn(2000, 8, generator=g)
    p, r = precision_recall(real, same, k=3)
    d, c = density_coverage(real, same, k=5)
    assert p > 0.8 and r > 0.8 and 0.8 < d < 1.2 and c > 0.9
    collapsed = real[:1] + 0.01 * torch.randn(2000, 8, generator=g)  # one mode only
    p, r = precision_recall(real, collapsed, k=3)
    d, c = density_coverage(real, collapsed, k=5)
    assert p > 0.9 and r < 0.01 and c < 0.01
    far = same + 10.0
    assert precision_recall(real, far)[0] == 0.0 and density_coverage(real, far) == (0.0, 0.0)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_metrics_agree_with_the_prdc_reference_implementation(k):
    # prdc (Naeem et al.'s code) computes all four with one k: call ours with the same k. Random
    # continuous features: no distance sits on a ball's boundary, where '<' (prdc) and '<=' (ours) differ.
    prdc = pytest.importorskip("prdc")
    g = torch.Generator().manual_seed(k)
    real = torch.randn(400, 6, generator=g)
    fake = 1.2 * torch.randn(300, 6, generator=g) + 0.4  # shifted and wider, so no metric is 0 or 1
    want = prdc.compute_prdc(real.numpy().astype(np.float64), fake.numpy().astype(np.float64), nearest_k=k)
    precision, recall = precision_recall(real, fake, k=k)
    density, coverage = density_coverage(real, fake, k=k)
    got = {"precision": precision, "recall": recall, "density": density, "coverage": coverage}
    assert 0 < want["precision"] < 1 and 0 < want["recall"] < 1 and 0 < want["coverage"] < 1
    for name, value in got.items():
        assert abs(value - float(want[name])) <= 1e-6, (name, value, float(want[name]))


def test_knn_metrics_need_more_than_k_samples():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="k \\+ 1 = 6"):
        density_coverage(x, torch.randn(50, 3), k=5)
    with pytest.raises(ValueError, match="k \\+ 1 = 4"):
        precision_recall(torch.randn(50, 3), x[:3], k=3)


def test_modes_and_kl():
    assert kl_to_uniform([5, 5, 5, 5]) == pytest.approx(0.0)
    assert kl_to_uniform([7, 0, 0, 0]) == pytest.approx(math.log(4))
    stats = mode_stats(torch.tensor([0, 0, 1, 9]), 10)
    assert stats["modes_covered"] == 3 and stats["histogram"][0] == 2
    with pytest.raises(ValueError):
        mode_stats(torch.tensor([10]), 10)


def test_minibatch_w2_translation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 5, generator=g)
    shift = torch.tensor([3.0, 4.0, 0, 0, 0])
    # one minibatch holding every point: the identity pairing is optimal for a translation, W2 = |shift|
    assert minibatch_w2(x, x + shift, batch_size=1000, num_batches=1) == pytest.approx(5.0, rel=1e-6)
    assert minibatch_w2(x, x, batch_size=1000) == pytest.approx(0.0, abs=1e-6)
    # random minibatches of the same distribution: W2 > 0 but shrinking with larger batches
    y = torch.randn(1000, 5, generator=g)
    assert minibatch_w2(x, y, batch_size=500, num_batches=2) < minibatch_w2(x, y, batch_size=50, num_batches=20)
    with pytest.raises(ValueError, match="dimensions"):
        minibatch_w2(x, x[:, :3])


@pytest.mark.parametrize("bad, match", [
    (torch.rand(10, 28, 28), "shape"),
    (torch.rand(10, 2, 28, 28), "shape"),
    (torch.rand(10, 1, 32, 32), "shape"),
    (torch.rand(10, 1, 28, 28) * 2 - 1, "\\(x \\+ 1\\) / 2"),
    (torch.rand(10, 1, 28, 28) * 255, "\\[0, 1\\]"),
    ((torch.rand(10, 1, 28, 28) * 255).to(torch.uint8), "floating point"),
    (torch.full((10, 1, 28, 28), float("nan")), "NaN"),
    ([1, 2, 3], "torch.Tensor"),
])
def test_check_images_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        check_images(bad)


# --------------------------------------------------------------------------------------------
# With a classifier
# --------------------------------------------------------------------------------------------
@pytest.mark.cli
def test_classifier_is_cached_and_deterministic(quick_classifier, mnist):
    from ae_ot.evaluation.classifier import _LOADED, get_classifier

    assert quick_classifier.cache_path.is_file()
    assert not quick_classifier.training
    _LOADED.clear()
    again = get_classifier(train_if_missing=False, splits=mnist, subset=6000, epochs=2)
    assert again is not quick_classifier
    for a, b in zip(again.state_dict().values(), quick_classifier.state_dict().values()):
        assert torch.equal(a, b)
    f1, p1 = extract_features(mnist.test_images[:50], again)
    assert f1.shape == (50, 128) and p1.shape == (50, 1, 10)
    assert quick_classifier.info["test_accuracy"] > 0.95


@pytest.mark.cli
def test_classifier_cache_missing_and_corrupt(tmp_path, monkeypatch, mnist):
    from ae_ot.data import ImageSplits
    from ae_ot.evaluation import classifier as clf

    mnist = ImageSplits(mnist.train_images[:2000], mnist.train_labels[:2000], mnist.test_images[:500],
                        mnist.test_labels[:500], "first 2000 MNIST images")

    monkeypatch.setenv("AE_OT_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ae-ot train-classifier"):
        clf.get_classifier(train_if_missing=False, splits=mnist, subset=300, epochs=1)
    key = clf.classifier_key(mnist, subset=300, epochs=1)
    clf.classifier_path(key).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable"):
        model = clf.get_classifier(train_if_missing=True, progress=False, splits=mnist, subset=300, epochs=1)
    assert clf.classifier_path(key).stat().st_size > 10000  # retrained and rewritten atomically
    assert not list(tmp_path.glob("*.tmp"))
    assert model.cache_path.parent == tmp_path


@pytest.mark.slow
def test_classifier_reaches_99_percent(real_classifier, mnist):
    """The production classifier (``-m slow`` trains it: 60,000 images, 3 epochs)."""
    from ae_ot.evaluation.classifier import classifier_accuracy
    from ae_ot.evaluation.reference import mnist_split_features

    _, probs = mnist_split_features(real_classifier, "test", mnist)  # cached beside the weights
    assert (probs.argmax(1) == mnist.test_labels).float().mean() >= 0.99
    assert classifier_accuracy(real_classifier, mnist.test_images[:1000], mnist.test_labels[:1000]) >= 0.98


def _fid_real_test(classifier, mnist):
    from ae_ot.evaluation.reference import mnist_split_features

    ref = get_reference(1, classifier, splits=mnist)
    test_features, _ = mnist_split_features(classifier, "test", mnist)
    return ref, fid_from_features(test_features, ref.features)


@pytest.mark.slow   # the default suite checks the same with the quick classifier (test_fid_grows_with_blur)
def test_fid_test_vs_train_is_small_real_classifier(real_classifier, mnist):
    _, fid = _fid_real_test(real_classifier, mnist)
    assert fid < 1.0


@pytest.mark.slow   # 24 s: the train split's features; the FID's own tests are fast
def test_fid_grows_with_blur(quick_classifier, mnist):
    ref, fid0 = _fid_real_test(quick_classifier, mnist)
    images = mnist.test_images[:1000]
    fids = [fid_from_features(extract_features(gaussian_blur(images, s), quick_classifier)[0], ref.features)
            for s in (0.5, 1.0, 1.5, 2.0)]
    assert fid0 < 1.0
    assert fid0 < fids[0] < fids[1] < fids[2] < fids[3], (fid0, fids)


@pytest.mark.slow
def test_fid_grows_with_blur_real_classifier(real_classifier, mnist):
    ref, fid0 = _fid_real_test(real_classifier, mnist)
    images = mnist.test_images[:1000]
    fids = [fid_from_features(extract_features(gaussian_blur(images, s), real_classifier)[0], ref.features)
            for s in (0.5, 1.0, 1.5, 2.0)]
    assert fid0 < fids[0] < fids[1] < fids[2] < fids[3], (fid0, fids)


# the real classifier (trained for this alone, ~1 min on 2 cores) only under -m slow
@pytest.mark.parametrize("which", ["quick", pytest.param("real", marks=pytest.mark.slow)])
@pytest.mark.cli
def test_one_digit_generator_and_noise(which, request, mnist):
    from ae_ot.evaluation import evaluate_generator

    classifier = request.getfixturevalue(f"{which}_classifier")
    ref = get_reference(1, classifier, splits=mnist)
    real = evaluate_samples(mnist.test_images[:1000], reference=ref)
    one = evaluate_generator(OneDigit(mnist.test_images[mnist.test_labels == 3]), 1000, reference=ref)
    noise = evaluate_samples(torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)), reference=ref)
    assert real["modes_covered"] == 10 and real["kl_to_uniform"] < 0.01 and real["recall_k3"] > 0.6
    # the quick (~97 %) classifier mislabels a few 3s; the real one does not
    assert one["modes_covered"] <= (1 if which == "real" else 2) and one["recall_k3"] < 0.2 and one["kl_to_uniform"] > 2.0
    assert noise["fid_classifier"] > 20 * max(real["fid_classifier"], 0.1)
    assert noise["precision_k3"] < 0.05 and noise["density_k5"] < 0.05
    assert noise["w2_minibatch_classifier"] > 2 * real["w2_minibatch_classifier"]
    with pytest.raises(ValueError, match="k \\+ 1"):
        evaluate_samples(mnist.test_images[:4], reference=ref)


# --------------------------------------------------------------------------------------------
# load_generator and the commands
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ae_checkpoint(tmp_path_factory):
    from conftest import run_cli

    root = tmp_path_factory.mktemp("ae")
    proc = run_cli("fit", "--config", "models/autoencoder.yaml", "--trainer.max_epochs=1", "--data.subset=512",
                   f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
                   "--model.init_args.grid_every_n_epochs=0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return next(root.rglob("*.ckpt"))


@pytest.mark.cli
def test_load_generator_roundtrip(ae_checkpoint):
    from ae_ot.generators import Autoencoder

    model = load_generator(ae_checkpoint)
    assert isinstance(model, Autoencoder) and not model.training
    assert torch.equal(model.sample(8, seed=1), load_generator(str(ae_checkpoint)).sample(8, seed=1))


@pytest.mark.cli
def test_load_generator_bad_files(tmp_path, ae_checkpoint):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_generator(tmp_path / "nope.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="garbage.ckpt.*corrupt"):
        load_generator(garbage)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ae_checkpoint.read_bytes()[:2000])
    with pytest.raises(ValueError, match="truncated.ckpt"):
        load_generator(truncated)
    ckpt = torch.load(ae_checkpoint, map_location="cpu", weights_only=False)
    for class_path, match in [("ae_ot.generators.NoSuchGAN", "unknown generator class"),
                              ("no_such_package.Model", "unknown generator class"),
                              ("torch.nn.Linear", "not a generator")]:
        ckpt["hyper_parameters"]["_class_path"] = class_path
        path = tmp_path / "other.ckpt"
        torch.save(ckpt, path)
        with pytest.raises(ValueError, match=match):
            load_generator(path)
    del ckpt["hyper_parameters"]["_class_path"]
    torch.save(ckpt, tmp_path / "named.ckpt")          # GenerativeModel names itself in the checkpoint
    assert type(load_generator(tmp_path / "named.ckpt")).__name__ == "Autoencoder"
    del ckpt["generator_class_path"]
    torch.save(ckpt, tmp_path / "anonymous.ckpt")
    with pytest.raises(ValueError, match="does not say which generator"):
        load_generator(tmp_path / "anonymous.ckpt")
    torch.save({"weights": 1}, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        load_generator(tmp_path / "plain.ckpt")


@pytest.mark.cli
def test_evaluate_command(ae_checkpoint, tmp_path, quick_classifier, monkeypatch):
    import ae_ot.evaluation as ev
    from ae_ot.commands import evaluate

    # use the quick classifier so this test never trains the big one

    monkeypatch.setattr(ev, "get_classifier", lambda **kw: quick_classifier)
    out = tmp_path / "m.json"
    result = evaluate.main(["--ckpt_path", str(ae_checkpoint), "--num_samples", "300", "--output", str(out),
                            "--grid", str(tmp_path / "g.png")])
    data = json.loads(out.read_text())
    assert data["generator"] == "ae_ot.generators.autoencoder.Autoencoder"
    for key in ("fid_classifier", "precision_k3", "recall_k3", "density_k5", "coverage_k5", "modes_covered",
                "kl_to_uniform", "mean_confidence", "w2_minibatch_classifier"):
        assert key in data["metrics"] and data["metric_names"][key]
    assert "MNIST classifier" in data["metric_names"]["fid_classifier"]
    assert (tmp_path / "g.png").is_file() and result["num_samples"] == 300


@pytest.mark.cli
def test_cli_errors(cli, tmp_path, ae_checkpoint):
    from ae_ot.commands import compare, evaluate

    with pytest.raises(ValueError, match="num_samples must be at least 6"):
        evaluate.main(["--ckpt_path", str(ae_checkpoint), "--num_samples", "3"])
    ckpt = torch.load(ae_checkpoint, map_location="cpu", weights_only=False)
    ckpt["hyper_parameters"]["_class_path"] = "ae_ot.generators.NoSuchGAN"
    torch.save(ckpt, tmp_path / "unknown.ckpt")
    proc = cli("evaluate", "--ckpt_path", str(tmp_path / "unknown.ckpt"))
    assert proc.returncode == 2 and "unknown generator class 'ae_ot.generators.NoSuchGAN'" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        compare.main(["--ckpt_paths", str(tmp_path / "missing.ckpt")])
    with pytest.raises(ValueError, match="nothing to compare"):
        compare.main([])


@pytest.mark.cli
def test_aeot_knob_study_measures_resumes_and_refuses_another_study(ae_checkpoint, tmp_path, quick_classifier,
                                                                    monkeypatch):
    """scripts/bench_aeot_knobs.py: one row per (targets, budget) with its held-out OT error and
    sample quality, the two reference rows, a resume that measures only the row a kill cut, and a
    refusal to mix two studies in one file."""
    import importlib.util

    from conftest import REPO

    import ae_ot.evaluation.classifier as classifier_module

    monkeypatch.setattr(classifier_module, "get_classifier", lambda **kw: quick_classifier)
    spec = importlib.util.spec_from_file_location("bench_aeot_knobs", REPO / "scripts" / "bench_aeot_knobs.py")
    knobs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(knobs)
    out = tmp_path / "knobs.jsonl"
    argv = ["run", "--ckpt_path", str(ae_checkpoint), "--targets", "50,all", "--budgets", "0.5", "--radii", "0.8,0",
            "--num_samples", "60", "--eval_samples", "20000", "--out", str(out), "--no_progress"]
    knobs.main(argv)
    rows = knobs.read_rows(out)
    keys = ["real-test", "decoded-codes", "50@0.5s", "50@0.5s r=0", "all@0.5s", "all@0.5s r=0"]
    assert [r["key"] for r in rows] == keys
    few, every = rows[2], rows[4]
    # the plain map (band 0) only returns targets, which are training codes; the extended map blends
    assert rows[3]["copies_of_training_codes"] == rows[5]["copies_of_training_codes"] == 1.0
    assert few["copies_of_training_codes"] < 1.0 and few["radius"] == 0.8
    assert rows[3]["heldout_mean_rel"] == few["heldout_mean_rel"]  # one solve, two bands
    assert few["num_targets"] == 50 and every["num_targets"] == every["num_codes"] > 50
    for row in (few, every):
        assert row["steps"] > 0 and row["eval_samples"] == 20000
        assert 0 <= row["heldout_mean_rel_corrected"] <= row["heldout_mean_rel"]
        assert math.isfinite(row["fid_classifier"]) and 0 <= row["recall_k3"] <= 1
    # with 50 targets and 20,000 samples the floor is lower than with every code
    assert few["noise_floor"] < every["noise_floor"]
    assert json.loads((tmp_path / "knobs.jsonl.config.json").read_text())["num_samples"] == 60

    # A kill in the middle of the last row's line: the rerun keeps the others and measures that one.
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])
    knobs.main(argv)
    again = knobs.read_rows(out)
    assert [r["key"] for r in again] == keys
    assert again[:5] == rows[:5]

    with pytest.raises(SystemExit, match="holds another study"):
        knobs.main([*argv, "--seed", "1"])
    knobs.main(["plot", "--out", str(out), "--figure", str(tmp_path / "knobs.png")])
    assert (tmp_path / "knobs.png").stat().st_size > 1000


def test_pixel_copies_count_memorised_images_and_not_new_ones():
    """Training images returned as samples are copies; real held-out digits are copies at the
    quantile's rate only; the threshold is the test images' own quantile."""
    from ae_ot.evaluation.copies import nearest_training_distances, pixel_copy_rate, pixel_copy_threshold

    g = torch.Generator().manual_seed(0)
    train = torch.rand(400, 1, 6, 6, generator=g)
    test = torch.rand(300, 1, 6, 6, generator=g)
    memorised = train[:100] + 1e-3
    copies = pixel_copy_rate(memorised, train, test)
    assert copies["pixel_copies"] == 1.0 and copies["median_nn_distance"] < 0.01
    fresh = pixel_copy_rate(torch.rand(300, 1, 6, 6, generator=g), train, test)
    assert fresh["pixel_copies"] < 0.05
    assert pixel_copy_rate(test, train, test)["pixel_copies"] == pytest.approx(0.01, abs=0.005)
    assert fresh["copy_threshold"] == pytest.approx(pixel_copy_threshold(test, train))
    exact = torch.cdist(train[:5].flatten(1), train.flatten(1), compute_mode="donot_use_mm_for_euclid_dist").min(1).values
    assert torch.allclose(nearest_training_distances(train[:5], train), exact, atol=1e-6)
    with pytest.raises(ValueError, match="test_images"):
        pixel_copy_rate(memorised, train)
