"""Peak memory of decoding and preprocessing one large image, as `validate` does it
(load_rgb, then the crop + resize to the model input), each in a fresh child process.

    python benchmarks/image_decode_memory.py [--side 8000] [--size 64]

Prints the child's peak RSS (VmHWM, Linux) for a JPEG and a PNG of SIDE x SIDE, and for
comparison the JPEG decoded in full (no draft mode, no reduction) through the same preprocessing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import sys, time
def peak_mb():  # VmHWM: this process's own high-water mark (ru_maxrss survives exec on Linux)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from PIL import Image
from gendertool import preprocess as pp
path, size, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "full":
    pp.DECODE_MIN_SIDE = 10**9  # no reduction: decode every pixel
if mode == "baseline":
    print(f"- {peak_mb():.0f} 0")
    sys.exit(0)
t0 = time.perf_counter()
rgb = pp.load_rgb(path)
out = pp.crop_resize(rgb, size, size)
dt = time.perf_counter() - t0
print(f"{rgb.shape[1]}x{rgb.shape[0]} {peak_mb():.0f} {dt:.2f}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=8000)
    ap.add_argument("--size", type=int, default=64, help="model input side")
    args = ap.parse_args()
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        img = Image.radial_gradient("L").resize((args.side, args.side)).convert("RGB")
        files = {"jpeg": Path(tmp) / "big.jpg", "png": Path(tmp) / "big.png"}
        img.save(files["jpeg"], quality=90)
        img.save(files["png"], compress_level=1)
        del img
        print(f"{args.side}x{args.side} image -> {args.size}x{args.size} input; peak RSS (VmHWM) of a fresh process")
        print(f"{'case':<24} {'decoded':>11} {'peak MB':>8} {'seconds':>8}")
        for label, path, mode in (("imports only", files["jpeg"], "baseline"),
                                  ("jpeg (draft mode)", files["jpeg"], "draft"),
                                  ("jpeg (full decode)", files["jpeg"], "full"),
                                  ("png", files["png"], "draft")):  # fmt: skip
            res = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.size), mode],
                                 capture_output=True, text=True)  # fmt: skip
            if res.returncode != 0:
                print(f"{label:<24} failed: {res.stderr.strip().splitlines()[-1]}")
                continue
            decoded, peak, secs = res.stdout.split()
            print(f"{label:<24} {decoded:>11} {peak:>8} {secs:>8}")


if __name__ == "__main__":
    main()
