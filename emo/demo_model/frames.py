"""Random single frames of the training identities, for the VAE: any mouth state, blink and pose."""
from __future__ import annotations

import numpy as np
import torch

from .clips import crop_frame, framed_identity
from .faces import Pose


def random_frame(identity_seed: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """-> (frame (S, S, 3) uint8 in the identity's crop, the mouth centre in its pixels)."""
    framed = framed_identity(identity_seed)
    if framed is None:
        raise ValueError(f"identity {identity_seed} has no face the detector finds")
    identity, _, crop = framed
    openness = 0.0 if rng.random() < 0.35 else rng.uniform(0, 1)
    blink = rng.choice([0.0, rng.uniform(0, 1)], p=[0.85, 0.15])
    pose = Pose(*(rng.uniform(-1, 1, 4) * np.array([4.0, 3.0, 3.0, 0.025]) + np.array([0, 0, 0, 1.0])))
    image = identity.frame(openness, blink, pose, own_mouth=bool(rng.random() < 0.1))
    left, top, side = crop
    s = size / side
    mouth = ((identity.mouth[0] - left) * s, (identity.mouth[1] - top) * s)
    return crop_frame(image, crop, size), mouth


def frame_batch(identity_seeds: list[int], rng: np.random.Generator, batch: int, size: int, patch: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (pixels (B, 3, P, P) in [-1, 1], loss weights (B, 1, P, P): 1, and 4 around the mouth).

    patch < size: a random P² window of each frame, half of them over the mouth."""
    pixels, weights = [], []
    for _ in range(batch):
        frame, (mx, my) = random_frame(int(rng.choice(identity_seeds)), rng, size)
        weight = np.ones((size, size), np.float32)
        r = size / 12
        weight[max(0, int(my - r)):int(my + r), max(0, int(mx - 1.5 * r)):int(mx + 1.5 * r)] = 4.0
        if patch < size:
            if rng.random() < 0.5:
                x0 = int(np.clip(mx - patch / 2 + rng.uniform(-patch / 4, patch / 4), 0, size - patch))
                y0 = int(np.clip(my - patch / 2 + rng.uniform(-patch / 4, patch / 4), 0, size - patch))
            else:
                x0, y0 = (int(v) for v in rng.integers(0, size - patch + 1, 2))
            frame, weight = frame[y0:y0 + patch, x0:x0 + patch], weight[y0:y0 + patch, x0:x0 + patch]
        pixels.append(torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1))  # h w c -> c h w
        weights.append(torch.from_numpy(np.ascontiguousarray(weight))[None])
    return torch.stack(pixels).float() / 127.5 - 1, torch.stack(weights)
