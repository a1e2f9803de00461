"""scripts/train_model.py's face-teacher helpers: numpy only, so they run without TF or dlib."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tm():
    spec = importlib.util.spec_from_file_location("train_model", REPO / "scripts" / "train_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 8)) + np.where(y[:, None] == 1, 1.5, -1.5) * np.eye(8)[0]
    return x, y


def test_logreg_separates_and_regularisation_shrinks(tm):
    x, y = _blobs()
    w = tm.fit_logreg(x, y, 0.1)
    assert np.mean((tm.logreg_prob(w, x) > 0.5) == y) > 0.9
    # the informative feature dominates; a larger penalty shrinks it
    assert abs(w[0]) > 3 * np.max(np.abs(w[1:-1]))
    assert abs(tm.fit_logreg(x, y, 100.0)[0]) < abs(w[0])


def test_teacher_probs_are_out_of_fold(tm):
    x, y = _blobs()
    names = [f"img-{i}.jpg" for i in range(len(y))]
    found = np.ones(len(y), bool)
    p = tm.teacher_probs(names, x, found, y)
    assert p.shape == y.shape and np.all((p > 0) & (p < 1))
    # flipping one image's label changes the regressions of the other folds only, never its own figure
    y2 = y.copy()
    y2[7] = 1 - y2[7]
    p2 = tm.teacher_probs(names, x, found, y2)
    assert p2[7] == p[7]
    fold = np.array([tm._bucket("fold:" + n) % 5 for n in names])
    same_fold = fold == fold[7]
    assert np.array_equal(p2[same_fold], p[same_fold]) and not np.array_equal(p2[~same_fold], p[~same_fold])


def test_teacher_probs_fall_back_to_the_label_without_a_face(tm):
    x, y = _blobs()
    found = np.ones(len(y), bool)
    found[[3, 4]] = False
    p = tm.teacher_probs([f"f{i}" for i in range(len(y))], x, found, y)
    assert p[3] == y[3] and p[4] == y[4]


def test_similarity_transform_recovers_rotation_scale_shift(tm):
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, size=(5, 2))
    a = np.radians(17.0)
    rot = 1.3 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = src @ rot.T + np.array([12.0, -7.5])
    m = tm.similarity_transform(src, dst)
    assert np.allclose(m[:, :2], rot) and np.allclose(m[:, 2], [12.0, -7.5])
    assert np.allclose(np.hstack([src, np.ones((5, 1))]) @ m.T, dst)


def test_face_swap_keeps_the_context_outside_the_face(tm):
    pytest.importorskip("cv2")  # the train extra's OpenCV
    marks = np.array([[70, 60], [55, 60], [25, 60], [40, 60], [48, 85]], float)
    face = np.full((128, 96, 3), 100, np.uint8)
    face[:, 48:] = 160  # the donor's left and right halves differ by 60
    ctx = np.full((128, 96, 3), 128, np.uint8)
    out = tm.face_swap(face, marks, ctx, marks).astype(int)
    # corners are context; inside the face the donor's structure survives the colour matching
    assert np.all(out[:8, :8] == 128) and np.all(out[-8:, -8:] == 128)
    assert out[85, 56, 0] - out[85, 40, 0] == 60
    assert abs((out[85, 56, 0] + out[85, 40, 0]) / 2 - 128) <= 2  # mean matched to the context


def test_cv_folds_partition_every_name_and_ignore_the_heldout_split(tm):
    names = [f"img{i:04d}.jpg" for i in range(2000)]
    folds = [tm.cv_fold(n, 5) for n in names]
    assert set(folds) == set(range(5))
    assert all(300 <= folds.count(k) <= 500 for k in range(5))  # about a fifth each
    # the folds cut across the held-out split instead of following it
    held = [f for n, f in zip(names, folds) if tm.is_heldout(n)]
    assert len(set(held)) == 5


def test_cv_fold_option_is_checked_before_tensorflow_loads(tm):
    for bad in ("5/5", "x/5", "0/1", "1"):
        with pytest.raises(SystemExit, match="--cv-fold"):
            tm.main(["--data", "unused", "--cv-fold", bad])
    with pytest.raises(SystemExit, match="neither --final"):
        tm.main(["--data", "unused", "--cv-fold", "0/5", "--final"])


def test_cv_without_heldout_needs_a_fold(tm):
    with pytest.raises(SystemExit, match="--cv-without-heldout needs --cv-fold"):
        tm.main(["--data", "unused", "--cv-without-heldout"])
