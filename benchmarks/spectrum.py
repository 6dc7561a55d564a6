"""How much of the images' spectral power lies in the high spatial frequencies: samples files against real ones.

    python benchmarks/spectrum.py reports/bloodmnist_28/vapo/run/samples/eval_*_n400_seed0.npz --dataset bloodmnist

For each file, the mean over its images of (power at radial frequencies >= a quarter of the side) / (total power), on
the channel-mean image scaled to [-1, 1]; the real rows are the first 400 test and training images. A smoother sampler
scores lower. (Used in issue 18 to ask why VAPO's FID worsens as its ODE solver gets more exact.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpfgm.data import load_split, read_image_file  # noqa: E402


def high_frequency_share(images: np.ndarray) -> float:
    """images: uint8 (n, H, W, C) -> mean share of each image's power at radius >= H / 4 in the centred 2-D spectrum."""
    x = images.astype(np.float64).mean(-1) / 127.5 - 1
    power = np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))) ** 2
    h, w = x.shape[1:]
    yy, xx = np.mgrid[:h, :w]
    high = np.hypot(yy - h // 2, xx - w // 2) >= h / 4
    return float(np.mean(power[:, high].sum(1) / power.sum((1, 2))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--dataset", default="bloodmnist")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--data-root")
    args = p.parse_args()
    for split in ("test", "train"):
        images = load_split(args.dataset, args.size, split, data_root=args.data_root).images[:400]
        print(f"real {split} (400): {high_frequency_share(images):.4f}")
    for path in args.files:
        print(f"{path.name}: {high_frequency_share(read_image_file(path)[0]):.4f}")


if __name__ == "__main__":
    main()
