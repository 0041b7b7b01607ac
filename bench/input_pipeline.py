#!/usr/bin/env python
"""Benchmark the training input pipeline: our batched tensor transform A on uint8 memory-mapped arrays vs a
PIL-per-image pipeline like the original's (ToPILImage -> RandomCrop(84, pad 8) -> ColorJitter(0.4, 0.4, 0.4) ->
RandomHorizontalFlip -> ToTensor -> Normalize, written with PIL since torchvision is not a dependency), in one
run; prints images/s and the ratio.

  .venv/bin/python bench/input_pipeline.py --images 2048 --size 84 --batch 64
"""
import argparse
import random
import tempfile
from pathlib import Path

from benchlib import clock  # first: src/ on the path, a clock that waits for the GPU
import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from metantk_nas.data.readers import RFS_MEAN, RFS_STD
from metantk_nas.data.transforms import TrainAugment


def pil_transform_a(arr, size, pad, jitter, rng):
    img = Image.fromarray(arr)
    img = ImageOps.expand(img, border=pad, fill=0)
    x, y = rng.randint(0, img.width - size), rng.randint(0, img.height - size)
    img = img.crop((x, y, x + size, y + size))
    ops = [lambda im, f: ImageEnhance.Brightness(im).enhance(f), lambda im, f: ImageEnhance.Contrast(im).enhance(f),
           lambda im, f: ImageEnhance.Color(im).enhance(f)]
    rng.shuffle(ops)
    for op in ops:
        img = op(img, rng.uniform(1 - jitter, 1 + jitter))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (t - torch.tensor(RFS_MEAN).view(3, 1, 1)) / torch.tensor(RFS_STD).view(3, 1, 1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--size", type=int, default=84)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "train_images.npy"
        np.save(path, np.random.default_rng(0).integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8))
        images = np.load(path, mmap_mode="r")
        perm = np.random.default_rng(1).permutation(args.images)
        aug = TrainAugment(args.size, 8, 0.4, RFS_MEAN, RFS_STD)
        steps = args.images // args.batch
        t0 = clock()
        for s in range(steps):
            idx = np.sort(perm[s * args.batch:(s + 1) * args.batch])
            aug(images[idx], torch.Generator().manual_seed(s))
        ours = steps * args.batch / (clock() - t0)
        rng = random.Random(0)
        t0 = clock()
        for s in range(steps):
            torch.stack([pil_transform_a(images[i], args.size, 8, 0.4, rng)
                         for i in perm[s * args.batch:(s + 1) * args.batch]])
        pil = steps * args.batch / (clock() - t0)
    print(f"torch threads {torch.get_num_threads()}, {args.images} images {args.size}x{args.size}, batch {args.batch}")
    print(f"ours (batched tensor transforms): {ours:8.0f} images/s")
    print(f"PIL per image (original style):   {pil:8.0f} images/s")
    print(f"ratio: {ours / pil:.2f}x")


if __name__ == "__main__":
    main()
