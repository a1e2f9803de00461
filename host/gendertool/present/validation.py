"""Validation tables: the host report (accuracy, confusion, parity) and validate --port's per-board extras."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gendertool.present.bench import ms_text, sim_prefix
from gendertool.text import about, count

if TYPE_CHECKING:
    from rich.console import Console

    from gendertool.device.validate import DeviceValidation
    from gendertool.model.validate import ValidationReport

MAX_DIFF_ROWS = 20


def present_validation(report: "ValidationReport", out: "Console", *, show_images: bool = False) -> None:
    """Tables for a validation report (host or device runs)."""
    from rich.markup import escape
    from rich.table import Table

    m = report.model
    out.print(
        f"model {escape(m['name'])} (sha256 {m['sha256'][:12]}), labels {escape(', '.join(report.labels))}; "
        f"{count(len(report.images), 'image')} from {escape(report.images_dir)}"
    )
    pre = m.get("preprocessing") or {}
    if pre:
        nums = lambda vs: "/".join(f"{float(v):g}" for v in vs)  # noqa: E731
        out.print(f"preprocessing: crop {pre['crop']} x {pre['crop_fraction']:g}, {pre['resize']}, "
                  f"channels {pre.get('channel_order', 'rgb').upper()}, mean {nums(pre['mean'])} std {nums(pre['std'])}")

    acc = Table(title="accuracy")
    acc.add_column("runtime")
    for col in ("correct", "accuracy", "invoke ms/image"):
        acc.add_column(col, justify="right")
    for r in report.runtimes:
        per_image = f"{1000 * r.invoke_s / r.total:.2f}" if r.invoke_s is not None and r.total else "-"
        acc.add_row(r.name, f"{r.correct}/{r.total}", f"{100 * r.accuracy:.1f} %", per_image)
    out.print(acc)

    cm = Table(title="confusion: rows true label, columns predicted")
    cm.add_column("runtime")
    cm.add_column("true")
    for label in report.labels:
        cm.add_column(escape(label), justify="right")
    for r in report.runtimes:
        for i, (label, row) in enumerate(zip(report.labels, r.confusion)):
            cm.add_row(r.name if i == 0 else "", escape(label), *(str(v) for v in row), end_section=i == len(report.labels) - 1)
    out.print(cm)

    par = Table(title=f"int8 output parity with {report.reference} (per image, all scores)")
    for col in ("runtime", "bit-identical", "largest difference", "same class"):
        par.add_column(col, justify="left" if col == "runtime" else "right")
    for p in report.parity:
        par.add_row(p.candidate, f"{p.identical}/{p.compared}", str(p.max_diff), f"{p.same_class}/{p.compared}")
    out.print(par)
    out.print("kernels behind each figure:")
    for r in report.runtimes:
        out.print(f"  {r.name}: {escape(r.kernels)}")

    rows = [im for im in report.images if show_images or not im.identical or len(set(im.predicted.values())) > 1]
    if rows:
        names = [r.name for r in report.runtimes]
        t = Table(title="images" if show_images else "images where the runtimes differ")
        t.add_column("image")
        t.add_column("true")
        for n in names:
            t.add_column(n)
        t.add_column("max diff", justify="right")
        shown = rows if show_images else rows[:MAX_DIFF_ROWS]
        for im in shown:
            t.add_row(
                escape(im.path),
                escape(im.label),
                *(f"{escape(im.predicted[n])} {list(im.scores[n])}" if n in im.scores else "-" for n in names),
                str(im.max_diff),
            )
        out.print(t)
        if len(shown) < len(rows):
            out.print(f"... {len(rows) - len(shown)} more (all of them with --show-images or --json)")
    for note in report.notes:
        out.print(f"note: {escape(note)}")
    out.print(f"{report.elapsed_s:.1f} s in all (preprocessing {report.preprocess_s:.1f} s)")


def present_device_validation(dv: "DeviceValidation", out: "Console", *, show_images: bool = False) -> None:
    """Tables for ``gendertool validate --port``: the host report per board plus device extras."""
    from rich.markup import escape
    from rich.table import Table


    for b in dv.boards:
        sim = sim_prefix(b.simulated)
        out.rule(f"{sim}{b.port} ({b.board})")
        if b.selftest:
            st = b.selftest
            state = "PASS" if st.get("pass") else "FAIL"
            origin = "boot self-test" if st.get("origin") == "boot" else "self-test (run now; the boot record was not seen)"
            out.print(f"{sim}{origin}: {state}, {count(st.get('n', 0), 'sample')}, {st.get('failed', 0)} failed")
            for e in st.get("results", []):
                if not e.get("ok", True):
                    out.print(f"  sample {e.get('sample')}: expected class {e.get('expect')}, got {e.get('got')}, "
                              f"largest score difference {e.get('diff')}")
        if b.report is not None:
            present_validation(b.report, out, show_images=show_images)
        lat = b.latency_stats()
        if lat:
            t = Table(title=f"{sim}device latency per image (ms)", title_justify="left")
            t.add_column("")
            for col in ("n", "min", "p50", "p90", "max", "mean"):
                t.add_column(col, justify="right")
            for key, name in (("pre_us", "preprocessing"), ("invoke_us", "Invoke()"), ("total_us", "total")):
                s = lat[key]
                t.add_row(name, str(s["n"]), *(ms_text(s[k]) for k in ("min", "p50", "p90", "max", "mean")))
            out.print(t)
        if show_images and b.report is not None:
            t = Table(title=f"{sim}per image on the device", title_justify="left")
            for col in ("image", "true", "device", "tflm", "bit-exact", "max diff", "pre ms", "invoke ms"):
                t.add_column(col, justify="right" if col.endswith(("ms", "diff")) else "left")
            for im in b.report.images:
                lat = b.latency.get(im.path)
                t.add_row(escape(im.path), escape(im.label), escape(im.predicted.get("device", "-")),
                          escape(im.predicted.get("tflm", "-")), "yes" if im.identical else "NO", str(im.max_diff),
                          ms_text(lat.pre_us) if lat else "-", ms_text(lat.invoke_us) if lat else "-")
            out.print(t)
        p = b.parity()
        if p is not None and b.partial:  # no verdict from part of the images
            why = "interrupted (Ctrl-C)" if b.interrupted else "the run stopped early"
            out.print(f"{sim}PARTIAL: {escape(b.coverage())}; of those, {p.identical}/{p.compared} bit-exact "
                      f"({b.parity_pct:.1f} %), largest difference {p.max_diff}; no --min-parity verdict: {why}")
        elif p is not None:
            verdict = "ok" if b.parity_ok(dv.min_parity) else f"BELOW --min-parity {dv.min_parity:g} %"
            out.print(f"{sim}parity with the TFLM reference: {p.identical}/{p.compared} images bit-exact "
                      f"({b.parity_pct:.1f} %), largest difference {p.max_diff}: {verdict}")
        if b.error:
            out.print(f"[red]{escape(about(b.port, b.error))}[/]")
    if len(dv.boards) > 1:
        t = Table(title="all boards", title_justify="left")
        for col in ("port", "board", "images", "bit-exact", "parity", "max diff", "self-test", "status"):
            t.add_column(col)
        for b in dv.boards:
            p = b.parity()
            t.add_row(escape(b.port), escape(b.board), str(p.compared if p else 0), str(p.identical if p else 0),
                      f"{b.parity_pct:.1f} %", str(p.max_diff if p else "-"),
                      ("pass" if b.selftest.get("pass") else "FAIL") if b.selftest else "-",
                      "ok" if b.passed(dv.min_parity) else escape(
                          b.error or ("interrupted" if b.interrupted else
                                      "self-test FAIL" if b.selftest_passed is False else "below --min-parity")))
        out.print(t)
