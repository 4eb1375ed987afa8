"""Nearest-neighbour search in latent space: find the training images whose codes are closest to a query's.

    python examples/latent_search.py runs/NAME               # a run made by 'aelab train'
    python examples/latent_search.py                         # no run: fits a small AutoencoderReducer first
    python examples/latent_search.py runs/NAME --out neighbours.png --queries 8

Prints how often the 5 nearest neighbours share the query's class and writes a PNG grid: one row per query
image (first column), followed by its nearest training images.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image
from sklearn.neighbors import NearestNeighbors

import aelab
from aelab.data import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="run folder (default: fit a small autoencoder here)")
    ap.add_argument("--train", type=int, default=10000, help="images to search among (default 10000)")
    ap.add_argument("--queries", type=int, default=6, help="query images shown in the grid (default 6)")
    ap.add_argument("-k", type=int, default=5, help="neighbours per query (default 5)")
    ap.add_argument("--out", default="neighbours.png", help="PNG grid to write (default neighbours.png)")
    args = ap.parse_args()

    data = load_dataset("fashion-mnist", train_limit=args.train, test_limit=1000)
    X, y = data.train.images.numpy(), data.train.labels.numpy()
    Q, qy = data.test.images.numpy(), data.test.labels.numpy()
    if args.run:
        encode = aelab.load(args.run).encode
    else:
        reducer = aelab.AutoencoderReducer(n_components=32, model="dense", width=0.5, epochs=3, random_state=0)
        encode = reducer.fit(X).transform

    index = NearestNeighbors(n_neighbors=args.k).fit(encode(X))
    _, nearest = index.kneighbors(encode(Q))
    agreement = (y[nearest] == qy[:, None]).mean()
    print(f"{len(Q)} queries among {len(X)} images: {agreement:.1%} of the {args.k} nearest neighbours in latent "
          f"space share the query's class ({data.classes[qy[0]]!r} -> "
          f"{[data.classes[c] for c in y[nearest[0]]]})")

    rows = [np.concatenate([Q[i], np.full((28, 4), 255, np.uint8), *X[nearest[i]]], axis=1)
            for i in range(min(args.queries, len(Q)))]
    grid = np.kron(np.concatenate(rows, axis=0), np.ones((2, 2), np.uint8))  # twice the size
    Image.fromarray(grid).save(args.out)
    print(f"grid -> {args.out}")


if __name__ == "__main__":
    main()
