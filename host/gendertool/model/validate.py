"""Validation: accuracy and runtime parity of a model on a folder of labelled images.

The folder holds one sub-folder per label. Every image goes through the reference
preprocessing (:func:`gendertool.model.preprocess.preprocess`, the bytes the firmware computes)
once; the same int8 input then runs on each runtime. The TFLM host runtime (reference
kernels) is the reference, since the firmware runs TFLM and ESP-NN is meant to be bit-exact
with TFLM's reference kernels; each LiteRT kernel set is compared with it output by output.

The result is a typed :class:`ValidationReport`; the device path adds a runtime whose
scores come from the board and reuses :func:`compare_outputs` and :func:`build_report`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gendertool.errors import GendertoolError, ImageError, Interrupted, ctrl_c_waits
from gendertool.files import check_report_file, write_report_atomic
from gendertool.model.info import load_model
from gendertool.model.preprocess import IMAGE_SUFFIXES, load_rgb, preprocess
from gendertool.model.runtime import LiteRtRunner, TflmRunner
from gendertool.model.sources import default_model_path
from gendertool.text import count

REFERENCE = "tflm"

# Which kernels produce each runtime's figures (said in every report).
KERNELS: dict[str, str] = {
    "reference": "LiteRT OpResolverType.BUILTIN_REF (reference kernels)",
    "default": "LiteRT default resolver (XNNPACK delegate)",
    "builtin": "LiteRT OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES (optimised builtin kernels, no XNNPACK)",
}
TFLM_KERNELS = "TFLM host runtime, tflite-micro (reference kernels, as the firmware without ESP-NN)"


def litert_runtime_name(kernels: str) -> str:
    return f"litert:{kernels}"


@dataclass(frozen=True)
class OutputComparison:
    """How two int8 output vectors for the same input differ."""

    identical: bool
    max_diff: int  # largest |a - b| over the scores
    same_class: bool  # argmax agrees

    def to_dict(self) -> dict:
        return {"identical": self.identical, "max_diff": self.max_diff, "same_class": self.same_class}


def compare_outputs(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> OutputComparison:
    """Compare two int8 score vectors (any shape with the same number of scores)."""
    x = np.asarray(a).astype(np.int32).ravel()
    y = np.asarray(b).astype(np.int32).ravel()
    if x.shape != y.shape:
        raise ValueError(f"cannot compare outputs of {x.size} and {y.size} scores")
    diff = int(np.max(np.abs(x - y))) if x.size else 0
    return OutputComparison(identical=diff == 0, max_diff=diff, same_class=int(np.argmax(x)) == int(np.argmax(y)))


@dataclass(frozen=True)
class RuntimeInfo:
    name: str  # "tflm", "litert:reference", later "device"
    kernels: str  # human description of the kernels behind the figures


@dataclass(frozen=True)
class ImageResult:
    path: str  # relative to the images folder
    label: str  # true label (its sub-folder)
    scores: dict[str, tuple[int, ...]]  # runtime -> int8 output scores
    predicted: dict[str, str]  # runtime -> predicted label
    comparisons: dict[str, OutputComparison]  # runtime -> comparison with the reference runtime

    @property
    def identical(self) -> bool:
        """All compared runtimes bit-identical with the reference."""
        return all(c.identical for c in self.comparisons.values())

    @property
    def max_diff(self) -> int:
        return max((c.max_diff for c in self.comparisons.values()), default=0)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "scores": {k: list(v) for k, v in self.scores.items()},
            "predicted": dict(self.predicted),
            "identical": self.identical,
            "max_diff": self.max_diff,
            "comparisons": {k: c.to_dict() for k, c in self.comparisons.items()},
        }


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str
    # "unreadable" | "outside" (loose in the images root) | "empty_folder" (a label folder)
    # | "not_found" (named by the --heldout list, absent from the folder)
    kind: str = "unreadable"


@dataclass(frozen=True)
class RuntimeSummary:
    name: str
    kernels: str
    correct: int
    total: int
    confusion: tuple[tuple[int, ...], ...]  # rows: true label, columns: predicted label
    invoke_s: float | None  # summed invoke time on the host (None when not measured here)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kernels": self.kernels,
            "accuracy": self.accuracy,
            "correct": self.correct,
            "total": self.total,
            "confusion": [list(r) for r in self.confusion],
            "invoke_s": self.invoke_s,
        }


@dataclass(frozen=True)
class ParitySummary:
    reference: str
    candidate: str
    reference_kernels: str
    candidate_kernels: str
    compared: int
    identical: int
    max_diff: int
    same_class: int

    def to_dict(self) -> dict:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "reference_kernels": self.reference_kernels,
            "candidate_kernels": self.candidate_kernels,
            "compared": self.compared,
            "identical": self.identical,
            "max_diff": self.max_diff,
            "same_class": self.same_class,
        }


@dataclass(frozen=True)
class ValidationReport:
    model: dict  # name, path, sha256, labels, preprocessing, input/output quantisation
    images_dir: str
    labels: tuple[str, ...]
    reference: str
    runtimes: tuple[RuntimeSummary, ...]
    parity: tuple[ParitySummary, ...]
    images: tuple[ImageResult, ...]
    skipped: tuple[SkippedFile, ...]
    elapsed_s: float
    preprocess_s: float = 0.0
    notes: tuple[str, ...] = field(default=())

    def runtime(self, name: str) -> RuntimeSummary:
        for r in self.runtimes:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "schema": 1,
            "model": self.model,
            "images_dir": self.images_dir,
            "labels": list(self.labels),
            "reference": self.reference,
            "runtimes": [r.to_dict() for r in self.runtimes],
            "parity": [p.to_dict() for p in self.parity],
            "images": [i.to_dict() for i in self.images],
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "elapsed_s": self.elapsed_s,
            "preprocess_s": self.preprocess_s,
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------
# collecting images


def read_image_list(path: str | Path) -> list[str]:
    """An image list such as the model card's ``models/heldout.txt``: one ``label/file name`` per
    line, relative to the images folder; blank lines and ``#`` comments ignored."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise GendertoolError(f"--heldout {p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GendertoolError(f"--heldout {p}: cannot read ({exc})") from None
    names = []
    for n, line in enumerate(lines, start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "/" not in line.strip("/") or line.startswith("/"):
            raise GendertoolError(f"--heldout {p}, line {n}: {line!r} is not 'label/file name'")
        names.append(line)
    if not names:
        raise GendertoolError(f"--heldout {p}: lists no image")
    return names


def shipped_heldout(info) -> Path | None:
    """The model card's held-out list when ``info`` is the shipped default model (else None)."""
    listed = default_model_path().parent / "heldout.txt"
    try:
        same = hashlib.sha256(default_model_path().read_bytes()).hexdigest() == info.sha256
    except OSError:
        return None
    return listed if same and listed.is_file() else None


def trained_on_note(info, items: Sequence[tuple[Path, str]], root: Path) -> str | None:
    """A note when the shipped model is validated on a folder that mixes its held-out portraits
    with others (its training images): the accuracy then is not the model card's."""
    listed_path = shipped_heldout(info)
    if listed_path is None:
        return None
    listed = set(read_image_list(listed_path))
    rel = [p.relative_to(root).as_posix() for p, _ in items]
    held = sum(r in listed for r in rel)
    if held == 0 or held == len(rel):
        return None
    return (f"{len(rel) - held} of these {count(len(rel), 'image')} are not in the model card's held-out list "
            f"({listed_path}): the model may have been trained on them, so this accuracy is not the card's; "
            f"`--heldout {listed_path}` validates on the held-out {held} only")


def collect_images(
    images_dir: str | Path, labels: Sequence[str], limit: int | None = None, only: Sequence[str] | None = None
) -> tuple[list[tuple[Path, str]], list[SkippedFile]]:
    """Find ``(file, label)`` pairs below ``images_dir/<label>/``.

    Sub-folders must be model labels. Every non-hidden file inside them is a candidate (the
    decoder decides whether it is an image). Image files lying loose in ``images_dir`` are
    reported as skipped; other loose files (README, licence) are ignored. ``only`` (from
    :func:`read_image_list`) keeps the files it names; named files that are absent are skipped
    as "not_found". ``limit`` keeps at most that many files, taken in turn from each label
    folder so every class stays present.
    """
    root = Path(images_dir)
    if not root.exists():
        raise ImageError(f"{root}: no such folder")
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder (expected one sub-folder per label: {', '.join(labels)})")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in subdirs if p.name not in labels]
    if unknown:
        raise ImageError(
            f"{root}: sub-folder(s) {', '.join(repr(u) for u in unknown)} are not labels of the model; "
            f"its labels are: {', '.join(labels)} (choose others with --labels a,b)"
        )
    loose = [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    where = "images go in one sub-folder per label: " + ", ".join(f"{root / label}/" for label in labels)
    if not subdirs:
        if loose:
            names = ", ".join(p.name for p in loose[:5]) + (", ..." if len(loose) > 5 else "")
            raise ImageError(f"{root}: {count(len(loose), 'image')} {'lies' if len(loose) == 1 else 'lie'} directly in the folder ({names}); {where}")
        raise ImageError(f"{root}: no label sub-folders; expected one sub-folder per label: {', '.join(labels)}")

    skipped = [SkippedFile(p.name, f"outside the label sub-folders; {where}", "outside") for p in loose]
    per_label: list[list[tuple[Path, str]]] = []
    for d in subdirs:
        files = sorted(
            p for p in d.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(d).parts)
        )
        if not files:
            skipped.append(SkippedFile(f"{d.name}/", f"empty label folder: no image of class {d.name!r}", "empty_folder"))
        per_label.append([(p, d.name) for p in files])
    if only is not None:
        wanted = dict.fromkeys(only)
        per_label = [[(p, lb) for p, lb in files if p.relative_to(root).as_posix() in wanted] for files in per_label]
        found = {p.relative_to(root).as_posix() for files in per_label for p, _ in files}
        if not found:
            raise ImageError(f"{root}: none of the {count(len(wanted), 'image')} of the --heldout list is there "
                             f"(first: {next(iter(wanted))})")
        skipped += [SkippedFile(name, "listed by --heldout, not in the folder", "not_found")
                    for name in wanted if name not in found]
    if limit is not None:
        if limit < 1:
            raise GendertoolError(f"--limit must be at least 1, got {limit}")
        chosen: list[tuple[Path, str]] = []
        depth = 0
        while len(chosen) < limit and any(depth < len(f) for f in per_label):
            for files in per_label:
                if depth < len(files) and len(chosen) < limit:
                    chosen.append(files[depth])
            depth += 1
        items = sorted(chosen, key=lambda pl: (pl[1], str(pl[0])))
    else:
        items = [pl for files in per_label for pl in files]
    if not items:
        raise ImageError(f"{root}: no files in the label sub-folders ({', '.join(p.name for p in subdirs)})")
    return items, skipped


def no_readable_images(root: Path, skipped: Sequence[SkippedFile]) -> ImageError:
    """The error for a folder in which no image could be decoded."""
    files = [s for s in skipped if s.kind not in ("empty_folder", "not_found")]
    names = ", ".join(s.path for s in files[:5]) + (", ..." if len(files) > 5 else "")
    first = f"; {files[0].path}: {files[0].reason}" if files else ""
    return ImageError(f"{root}: no readable images ({count(len(files), 'file')} skipped: {names}{first})")


def skip_reason(exc: ImageError, path: Path) -> str:
    """The reason part of an ImageError message (without the path)."""
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


# ---------------------------------------------------------------------------------------------
# building the report (shared with the device path)


def confusion_matrix(pairs: Iterable[tuple[str, str]], labels: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    index = {label: i for i, label in enumerate(labels)}
    m = [[0] * len(labels) for _ in labels]
    for true, pred in pairs:
        m[index[true]][index[pred]] += 1
    return tuple(tuple(r) for r in m)


def build_report(
    *,
    model: dict,
    images_dir: str | Path,
    labels: Sequence[str],
    runtimes: Sequence[RuntimeInfo],
    images: Sequence[ImageResult],
    skipped: Sequence[SkippedFile],
    elapsed_s: float,
    invoke_s: dict[str, float] | None = None,
    preprocess_s: float = 0.0,
    reference: str = REFERENCE,
    notes: Sequence[str] = (),
) -> ValidationReport:
    """Accuracy, confusion matrices and parity summaries from per-image results."""
    invoke_s = invoke_s or {}
    summaries = []
    for rt in runtimes:
        pairs = [(im.label, im.predicted[rt.name]) for im in images if rt.name in im.predicted]
        summaries.append(
            RuntimeSummary(
                name=rt.name,
                kernels=rt.kernels,
                correct=sum(t == p for t, p in pairs),
                total=len(pairs),
                confusion=confusion_matrix(pairs, labels),
                invoke_s=invoke_s.get(rt.name),
            )
        )
    kernels = {rt.name: rt.kernels for rt in runtimes}
    parity = []
    for rt in runtimes:
        if rt.name == reference:
            continue
        comps = [im.comparisons[rt.name] for im in images if rt.name in im.comparisons]
        parity.append(
            ParitySummary(
                reference=reference,
                candidate=rt.name,
                reference_kernels=kernels.get(reference, reference),
                candidate_kernels=rt.kernels,
                compared=len(comps),
                identical=sum(c.identical for c in comps),
                max_diff=max((c.max_diff for c in comps), default=0),
                same_class=sum(c.same_class for c in comps),
            )
        )
    return ValidationReport(
        model=dict(model),
        images_dir=str(images_dir),
        labels=tuple(labels),
        reference=reference,
        runtimes=tuple(summaries),
        parity=tuple(parity),
        images=tuple(images),
        skipped=tuple(skipped),
        elapsed_s=elapsed_s,
        preprocess_s=preprocess_s,
        notes=tuple(notes),
    )


def model_summary(info) -> dict:
    """The parts of a :class:`gendertool.model.info.ModelInfo` a validation report names."""
    return {
        "name": info.name,
        "path": str(info.path) if info.path is not None else None,
        "sha256": info.sha256,
        "labels": list(info.labels),
        "preprocessing": info.preprocessing.to_dict(),
        "input": {"shape": list(info.input.shape), "scale": info.input.scale, "zero_point": info.input.zero_point},
        "output": {"shape": list(info.output.shape), "scale": info.output.scale, "zero_point": info.output.zero_point},
    }


# ---------------------------------------------------------------------------------------------
# the host operation


def validate_host(
    images_dir: str | Path,
    model: str | Path | None = None,
    *,
    labels: Sequence[str] | None = None,
    kernels: Sequence[str] = ("reference",),
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    out_path: str | Path | None = None,
    heldout: str | Path | None = None,
) -> ValidationReport:
    """Run every image of ``images_dir`` through TFLM (reference) and LiteRT with ``kernels``.

    ``heldout``: an image list (:func:`read_image_list`, e.g. the model card's
    ``models/heldout.txt``): only those images. Without it, the shipped model on a folder that
    holds its training images gets a note saying so (:func:`trained_on_note`).

    ``progress(done, total)`` is called after each file. With ``out_path`` the report is
    written there atomically. Ctrl-C raises :class:`Interrupted` carrying the report of the
    images compared so far (also written to ``out_path``, marked partial).
    """

    kernels = tuple(dict.fromkeys(kernels))  # keep order, drop repeats
    for k in kernels:
        if k not in KERNELS:
            raise GendertoolError(f"unknown kernel set {k!r}; choose from: {', '.join(KERNELS)}")

    if out_path is not None:
        out_path = Path(out_path)
        check_report_file(out_path)
    t_start = time.perf_counter()
    info = load_model(model, labels=labels, measure_arena=False)  # checks labels against the outputs
    _, height, width, _ = info.input.shape
    items, skipped = collect_images(images_dir, info.labels, limit,
                                    only=read_image_list(heldout) if heldout is not None else None)
    split_note = (f"only the images listed in {heldout}" if heldout is not None
                  else trained_on_note(info, items, Path(images_dir)))

    runtimes = [RuntimeInfo(REFERENCE, TFLM_KERNELS)] + [RuntimeInfo(litert_runtime_name(k), KERNELS[k]) for k in kernels]
    runners = {REFERENCE: TflmRunner(info.data)}
    for k in kernels:
        runners[litert_runtime_name(k)] = LiteRtRunner(info.data, kernels=k)
    invoke_s = {name: 0.0 for name in runners}
    preprocess_s = 0.0

    root = Path(images_dir)
    results: list[ImageResult] = []
    try:
        for done, (path, label) in enumerate(items, start=1):
            rel = path.relative_to(root).as_posix()
            t0 = time.perf_counter()
            try:
                rgb = load_rgb(path)
            except ImageError as exc:
                skipped.append(SkippedFile(rel, skip_reason(exc, path)))
            else:
                x = preprocess(rgb, info.preprocessing, height, width, info.input.scale, info.input.zero_point)
                preprocess_s += time.perf_counter() - t0
                scores: dict[str, tuple[int, ...]] = {}
                for name, runner in runners.items():
                    t1 = time.perf_counter()
                    out = runner.invoke(x)
                    invoke_s[name] += time.perf_counter() - t1
                    scores[name] = tuple(int(v) for v in np.asarray(out).ravel())
                ref = scores[REFERENCE]
                results.append(
                    ImageResult(
                        path=rel,
                        label=label,
                        scores=scores,
                        predicted={name: info.labels[int(np.argmax(s))] for name, s in scores.items()},
                        comparisons={name: compare_outputs(ref, s) for name, s in scores.items() if name != REFERENCE},
                    )
                )
            if progress is not None:
                progress(done, len(items))
    except KeyboardInterrupt:
        if not results:
            raise Interrupted(f"0 of {len(items)} images compared on this computer; nothing written") from None
        report = build_report(
            model=model_summary(info), images_dir=root, labels=info.labels, runtimes=runtimes, images=results,
            skipped=skipped, elapsed_s=time.perf_counter() - t_start, invoke_s=invoke_s, preprocess_s=preprocess_s,
            notes=[f"interrupted (Ctrl-C) after {len(results)} of {len(items)} images"])
        where = "nothing written"
        if out_path is not None:
            try:
                write_report_atomic(out_path, {**report.to_dict(), "partial": True})
                where = f"partial report {out_path}"
            except GendertoolError as exc:
                where = str(exc)
        planned: dict[str, int] = {}
        for _, label in items:
            planned[label] = planned.get(label, 0) + 1
        folders = ", ".join(f"{lb} {sum(r.label == lb for r in results)} of {n}" for lb, n in planned.items())
        raise Interrupted(f"{len(results)} of {len(items)} images compared on this computer ({folders}); {where}",
                          partial=report) from None

    if not results:
        raise no_readable_images(root, skipped)

    report = build_report(
        model=model_summary(info),
        images_dir=root,
        labels=info.labels,
        runtimes=runtimes,
        images=results,
        skipped=skipped,
        elapsed_s=time.perf_counter() - t_start,
        invoke_s=invoke_s,
        preprocess_s=preprocess_s,
        notes=[split_note] if split_note else [],
    )
    if out_path is not None:
        try:
            with ctrl_c_waits():  # a Ctrl-C now waits for the report to be written
                write_report_atomic(out_path, {**report.to_dict(), "partial": False})
        except KeyboardInterrupt:
            raise Interrupted(f"{len(results)} of {len(items)} images compared on this computer; report {out_path} "
                              "(complete)", partial=report) from None
    return report
