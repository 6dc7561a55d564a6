"""How much a few noise draws move the PFGM ablation's scores: real images with k of them replaced by noise.

    python benchmarks/fd_outliers.py [--k 0,1,2,3,5,10,20] [--out reports/bloodmnist_28/pfgm_ablation/fd_outliers.json]

The ablation scores 400 drawn images against a fixed block of 400 BloodMNIST test images. A PFGM run's failed
draws (saturated noise, `failed_draws` on the ablation page) are a few of those 400. Here the floor block (the
other 400 test images, real cells) stands in for a perfect generator, and k of its images are replaced by noise
drawn the way a failed PFGM draw ends: raw values far outside [-1, 1] (N(0, 10^2)), clipped to the pixel range.
The domain FD and FID against the reference block, for each k, say how far k failed draws move each score
with nothing else wrong: the controlled check of the page's reading that a single run's domain FD follows its
handful of noise draws while FID does not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpfgm.data import load_split, to_uint8  # noqa: E402
from medpfgm.evaluate.evaluate import cached_features  # noqa: E402
from medpfgm.evaluate.pipeline import build_spaces, checked_classifier, machine  # noqa: E402
from medpfgm.io import write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pfgm_ablation import OUT, ROOT, real_blocks  # noqa: E402


def noise_draws(k: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """k raw images (k, C, H, W) ending as a failed draw does: values N(0, 10^2), nearly all outside [-1, 1]."""
    return torch.randn(k, *shape, generator=torch.Generator().manual_seed(seed)) * 10


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", default="0,1,2,3,5,10,20", help="comma-separated numbers of noise images among the 400")
    p.add_argument("--out", type=Path, default=OUT / "fd_outliers.json")
    args = p.parse_args()
    device = torch.device("cpu")
    test = load_split("bloodmnist", 28, "test")
    classifier, _ = checked_classifier(ROOT / "reports" / "bloodmnist_28" / "classifier", "bloodmnist", 28, device)
    spaces, _ = build_spaces(["fid"], classifier, None, device)
    reference, block = real_blocks(test)
    h, w, c = block.shape[1:]
    reference_features = {space.name: cached_features(space, reference) for space in spaces}
    rows = []
    for k in (int(v) for v in args.k.split(",")):
        images = block.copy()
        if k:
            images[:k] = to_uint8(noise_draws(k, (c, h, w)))
        row = {"noise_images": k, "of": len(images)}
        for space in spaces:
            row[space.name] = space.distance(reference_features[space.name], space.extract(images))
        rows.append(row)
        print(row, flush=True)
    write_json(args.out, {"rows": rows, "machine": machine(), "threads": torch.get_num_threads()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
