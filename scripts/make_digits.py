#!/usr/bin/env python3
"""Writes scikit-learn's 8x8 digits as data/digits.npz (X: 1797x64 float32 in 0..16, y: int64),
the layout fulmen's npz readers take: `python3 scripts/make_digits.py` (needs scikit-learn).
The GAN example (examples/gan.rs) and its test read it."""

import os
import sys

import numpy as np
from sklearn.datasets import load_digits

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("data", "digits.npz")
digits = load_digits()
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
np.savez_compressed(out, X=digits.data.astype(np.float32), y=digits.target.astype(np.int64))
print(f"wrote {out}: {digits.data.shape[0]} digits of 8x8 pixels")
