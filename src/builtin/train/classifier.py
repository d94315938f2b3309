#!/usr/bin/env python3
"""The metric network: a small CNN trained on the procedural set (single-object scenes), one
resolution-agnostic model for 64, 96 and 128 px (convolutions, then an adaptive 4 x 4 average
pool, so every input size gives the same feature layout).

Heads: shape (6), colour (8), size (2), position (5), background colour (9), background kind (2).
Gives (1) 64-d penultimate features for a Frechet distance and (2) predicted attributes for
prompt adherence. Training images are augmented (blur, noise, colour jitter) so that the
classifier also reads VAE-decoded, slightly blurred images.

    python3 classifier.py train [--out classifier.pt] [--seed 7] [--steps 3000]   # deterministic
    python3 classifier.py test  [--weights classifier.pt] [--vae DIR]             # held-out accuracy

API: load(path) -> model; features(model, images) -> [N, 64]; predict(model, images) -> list of
dicts; adherent(pred, caption) -> bool; frechet(f1, f2) -> float. `images` are float arrays or
tensors [N, H, W, 3] in [0, 1] (numpy) or [N, 3, H, W] in [0, 1] (torch).
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import data  # noqa: E402

HEADS = {"shape": data.SHAPES, "colour": data.OBJECT_COLOURS, "size": data.SIZES,
         "position": data.POSITIONS, "background": data.BG_COLOURS, "background_kind": data.BG_KINDS}
DEFAULT_WEIGHTS = HERE / "classifier.pt"
RESOLUTIONS = (64, 96, 128)
FEATURE_DIM = 64


class Net(nn.Module):
    def __init__(self):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        # every input is resized to 64 px first (see forward), so one set of filters serves all sizes
        self.stem = block(5, 24, 1)
        self.body = nn.Sequential(block(24, 32, 2), block(32, 32, 1), block(32, 48, 2), block(48, 48, 1),
                                  block(48, 64, 2), block(64, 64, 1))
        self.pool = nn.AdaptiveAvgPool2d(4)
        # where (the 4 x 4 pooled map) and what (global average and max pools, translation invariant)
        self.fc = nn.Sequential(nn.Linear(64 * 16 + 128, 128), nn.ReLU(), nn.Linear(128, FEATURE_DIM), nn.ReLU())
        self.heads = nn.ModuleDict({k: nn.Linear(FEATURE_DIM, len(v)) for k, v in HEADS.items()})

    def forward(self, x):
        """x: [N, 3, H, W] in [0, 1]. Images are resized to 64 px first (bilinear, antialiased)
        so every resolution meets the same filters; two coordinate channels are appended."""
        if x.shape[-1] != 64 or x.shape[-2] != 64:
            x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
        n = x.shape[0]
        ys = torch.linspace(-1, 1, 64).view(1, 1, 64, 1).expand(n, 1, 64, 64)
        xs = torch.linspace(-1, 1, 64).view(1, 1, 1, 64).expand(n, 1, 64, 64)
        h = self.stem(torch.cat([x * 2 - 1, ys, xs], 1))
        b = self.body(h)
        f = self.fc(torch.cat([self.pool(b).flatten(1), b.mean(dim=(2, 3)), b.amax(dim=(2, 3))], 1))
        return f, {k: head(f) for k, head in self.heads.items()}


def to_tensor(images):
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images)).float()
        if images.max() > 1.5:
            images = images / 255.0
        return images.permute(0, 3, 1, 2)
    return images.float()


def label_ids(scene):
    lab = data.labels(scene)
    o = lab["objects"][0]
    return [HEADS["shape"].index(o["shape"]), HEADS["colour"].index(o["colour"]), HEADS["size"].index(o["size"]),
            HEADS["position"].index(o["position"]), HEADS["background"].index(lab["background"]),
            HEADS["background_kind"].index(lab["background_kind"])]


def make_set(n, seed, res):
    scenes = data.scene_set(n, seed, single_only=True)
    x = np.stack([data.to_uint8(data.render(s, res)) for s in scenes])
    y = np.array([label_ids(s) for s in scenes], dtype=np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def gaussian_blur(x, sigma):
    if sigma <= 0.05:
        return x
    r = int(math.ceil(2.5 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x


def augment(x, g):
    """x [N, 3, H, W] in [0, 1]: blur (in 128-px units 0..1.6 px), noise, brightness/contrast jitter."""
    n, _, h, _ = x.shape
    out = []
    for i in range(n):
        xi = x[i:i + 1]
        if torch.rand(1, generator=g) < 0.6:
            xi = gaussian_blur(xi, float(torch.rand(1, generator=g)) * 1.6 * h / 128)
        out.append(xi)
    x = torch.cat(out)
    x = x * (1 + 0.1 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)) + 0.06 * (torch.rand(n, 3, 1, 1, generator=g) - 0.5)
    x = x + 0.03 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1)


def train(out, seed=7, steps=2000, batch=64, n_per_res=12000, threads=1):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.time()
    sets = {r: make_set(n_per_res, 5000 + r, r) for r in RESOLUTIONS}
    print(f"rendered {n_per_res} x {len(RESOLUTIONS)} images in {time.time() - t0:.0f}s", flush=True)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        lr = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        for pg in opt.param_groups:
            pg["lr"] = lr
        r = RESOLUTIONS[step % len(RESOLUTIONS)]
        X, Y = sets[r]
        idx = torch.randint(0, len(X), (batch,), generator=g)
        x = augment(X[idx].permute(0, 3, 1, 2).float() / 255.0, g)
        _, logits = model(x)
        loss = sum((2.0 if k == "shape" else 1.0) * F.cross_entropy(logits[k], Y[idx, j]) for j, k in enumerate(HEADS))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}/{steps} loss {float(loss):.4f} {time.time() - t0:.0f}s", flush=True)
    model.eval()
    torch.save({"state_dict": {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()},
                "seed": seed, "steps": steps, "batch": batch, "n_per_res": n_per_res}, out)
    print(f"saved {out} ({os.path.getsize(out) / 1e3:.0f} kB) after {time.time() - t0:.0f}s")


def load(path=DEFAULT_WEIGHTS):
    st = torch.load(path, weights_only=False)
    model = Net()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in st["state_dict"].items()})
    return model.eval()


@torch.no_grad()
def run(model, images, batch=256):
    x = to_tensor(images)
    feats, preds = [], {k: [] for k in HEADS}
    for i in range(0, len(x), batch):
        f, logits = model(x[i:i + batch])
        feats.append(f)
        for k in HEADS:
            preds[k].append(logits[k].argmax(1))
    preds = {k: torch.cat(v).tolist() for k, v in preds.items()}
    out = [{k: HEADS[k][preds[k][i]] for k in HEADS} for i in range(len(x))]
    return torch.cat(feats).double().numpy(), out


def features(model, images):
    return run(model, images)[0]


def predict(model, images):
    return run(model, images)[1]


def adherent(pred, caption):
    """True when every attribute the (single-object) caption states matches the prediction."""
    stated = data.parse_caption(caption)
    o = stated["objects"][0]
    for k in ("shape", "colour", "size", "position"):
        if o[k] is not None and pred[k] != o[k]:
            return False
    if stated["background"] is not None and pred["background"] != stated["background"]:
        return False
    if stated["background_kind"] == "gradient" and pred["background_kind"] != "gradient":
        return False
    return True


def frechet(f1, f2):
    """Frechet distance between Gaussians fitted to two feature sets (numpy only)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r1 @ s2 @ r1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def test(weights, vae_dir=None, n=1500, seed=9001):
    model = load(weights)
    res_out = {}
    vae = None
    if vae_dir:
        from diffusers import AutoencoderKL
        vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    for r in RESOLUTIONS:
        X, Y = make_set(n, seed + r, r)
        x = X.permute(0, 3, 1, 2).float() / 255.0
        variants = {"rendered": x}
        if vae is not None:
            with torch.no_grad():
                rec = torch.cat([vae.decode(vae.encode(x[i:i + 50] * 2 - 1).latent_dist.mean).sample
                                 for i in range(0, len(x), 50)])
            variants["vae_reconstructed"] = ((rec + 1) / 2).clamp(0, 1)
        for name, xv in variants.items():
            _, preds = run(model, xv)
            acc = {}
            for j, k in enumerate(HEADS):
                acc[k] = float(np.mean([p[k] == HEADS[k][int(Y[i, j])] for i, p in enumerate(preds)]))
            acc["all"] = float(np.mean([all(p[k] == HEADS[k][int(Y[i, j])] for j, k in enumerate(HEADS))
                                        for i, p in enumerate(preds)]))
            res_out[f"{r}px_{name}"] = acc
            print(r, name, json.dumps({k: round(v, 4) for k, v in acc.items()}), flush=True)
    return res_out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", default=str(DEFAULT_WEIGHTS))
    t.add_argument("--seed", type=int, default=7)
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--threads", type=int, default=1)
    e = sub.add_parser("test")
    e.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    e.add_argument("--vae", default=None, help="also score VAE-reconstructed images (a vae/ folder)")
    e.add_argument("--n", type=int, default=1500)
    e.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.cmd == "train":
        train(a.out, a.seed, a.steps, threads=a.threads)
    else:
        torch.set_num_threads(1)
        r = test(a.weights, a.vae, a.n)
        if a.json:
            Path(a.json).write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
