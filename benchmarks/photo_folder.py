"""Write the small real-photo folder (crops of scikit-learn / scikit-image photos, one class
per photo) that the README's simple_vgg figures use.

    python benchmarks/photo_folder.py runs/photos --per-class 40 --size 64
"""

from __future__ import annotations

import argparse

from cnnbench.training.samples import write_photo_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    count = write_photo_folder(args.out, args.per_class, args.size, seed=args.seed)
    print(f"wrote {count} images to {args.out}")


if __name__ == "__main__":
    main()
