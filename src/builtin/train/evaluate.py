#!/usr/bin/env python3
"""NoiseShift on the built-in model, measured: one command for the whole table.

Cells: each resolution (native 128 px and the lower ones) x {baseline, NoiseShift, SD3-style
resolution time shift, time shift + NoiseShift}. The time shift replaces the scheduler shift S
by a = sqrt(tokens / native tokens) * S (sigma' = a sigma / (1 + (a - 1) sigma) applied to the
native schedule, which is the same as building the schedule with shift a*S); at the native
resolution it is the baseline itself, so those two cells are shared. Per cell: P prompts x M
seeds (seed s0 + p*M + j), prompts drawn from the grammar's single-object captions and disjoint
from the calibration captions. Metrics (classifier.py): Frechet distance of the classifier's
penultimate features against as many real renders of the same scene distribution at the same
resolution, prompt adherence (fraction of images whose predicted attributes match every
attribute the prompt states), and the NoiseShift objective (mean over steps of the
calibration loss, x-space form) on held-out images; 95 % bootstrap intervals.

Backends:
  binary    (default) calls `noiseshift calibrate --images --captions` and
            `noiseshift generate --prompt ... --batch M --out FILE.png` (FILE-j.png per seed).
            The objective column then comes from the calibration tables' own losses
            (loss_nominal / loss_calibrated on the calibration images).
  diffusers the same with diffusers' StableDiffusion3Pipeline components in Python: a small Euler
            loop that conditions the transformer on sigma_hat while the update uses the true
            sigmas, and the coarse-to-fine grid search of ../shared/NOISESHIFT.md; the objective
            is measured on held-out images.

    python3 evaluate.py --binary target/release/noiseshift --out /tmp/ns-eval
    python3 evaluate.py --backend diffusers --model src/builtin/model --images-per-cell 200 --out DIR

Everything is cached under --out (rerun to resume). Writes DIR/results.json, DIR/results.md,
DIR/grid.png (same prompts and seeds, baseline beside NoiseShift, at each resolution) and
DIR/tables/*.json, and prints its run time.
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE))
import data  # noqa: E402

METHODS = ["baseline", "noiseshift", "timeshift", "timeshift+noiseshift"]
CAL_SEED, HELD_SEED, PROMPT_SEED, REAL_SEED, GEN_SEED = 31001, 32001, 33001, 34001, 1000
GRID_PROMPTS = ["a red circle", "a blue square", "a green triangle on a white background",
                "a small yellow star on the left", "a large purple ring on a black background",
                "an orange cross at the top on a blue background"]


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------------
# schedules
# ----------------------------------------------------------------------------------------------

def tokens(res, patch=16):
    return (res // patch) ** 2


def schedule_shift(method, res, native, native_shift):
    if method.startswith("timeshift"):
        return math.sqrt(tokens(res) / tokens(native)) * native_shift
    return native_shift


def sigmas_for(steps, shift):
    """diffusers' FlowMatchEulerDiscreteScheduler sigmas (N + 1, ending in 0) for a shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    s = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    s.set_timesteps(steps)
    return [float(v) for v in s.sigmas]


# ----------------------------------------------------------------------------------------------
# prompts and data
# ----------------------------------------------------------------------------------------------

def calibration_folder(out, res, n, seed=CAL_SEED):
    d = out / "data" / f"calib_{res}"
    if not (d / "captions.jsonl").exists():
        data.write_folder(str(d), n, seed, res, tsv=True, quiet=True)
    return d


def heldout_folder(out, res, n):
    d = out / "data" / f"heldout_{res}"
    if not (d / "captions.jsonl").exists():
        data.write_folder(str(d), n, HELD_SEED, res, quiet=True)
    return d


def eval_prompts(n, exclude):
    """n single-object captions from the grammar, none equal to a calibration caption."""
    out, k = [], 0
    while len(out) < n:
        rng = np.random.default_rng([PROMPT_SEED, k])
        sc = data.sample_scene(rng, single_only=True)
        cap = data.caption(sc, rng, 0.25)
        k += 1
        if cap in exclude:
            continue
        out.append(cap)
    return out


def real_images(res, n):
    scenes = data.scene_set(n, REAL_SEED, single_only=True)
    return np.stack([data.render(s, res) for s in scenes])


def read_captions(folder):
    rows = [json.loads(l) for l in (folder / "captions.jsonl").read_text().splitlines() if l.strip()]
    return [r["file"] for r in rows], [r["caption"] for r in rows]


def load_folder_images(folder, files):
    return np.stack([np.asarray(Image.open(folder / "images" / f).convert("RGB"), dtype=np.float32) / 255.0
                     for f in files])


# ----------------------------------------------------------------------------------------------
# diffusers backend
# ----------------------------------------------------------------------------------------------

class Diffusers:
    def __init__(self, model_dir, max_sequence_length, threads):
        import torch
        from diffusers import StableDiffusion3Pipeline
        import diffusers
        diffusers.utils.logging.set_verbosity_error()
        torch.set_num_threads(threads)
        self.torch = torch
        self.pipe = StableDiffusion3Pipeline.from_pretrained(model_dir, text_encoder_3=None, tokenizer_3=None,
                                                             torch_dtype=torch.float32)
        self.pipe.set_progress_bar_config(disable=True)
        self.msl = max_sequence_length
        self.tr = self.pipe.transformer.eval()
        self.vae = self.pipe.vae.eval()
        self.scale = self.vae.config.scaling_factor
        self.shift = self.vae.config.shift_factor or 0.0
        self.model_dir = Path(model_dir)
        self._emb = {}

    def embed(self, prompts):
        torch = self.torch
        missing = [p for p in dict.fromkeys(prompts) if p not in self._emb]
        for i in range(0, len(missing), 128):
            chunk = missing[i:i + 128]
            with torch.no_grad():
                e, _, p, _ = self.pipe.encode_prompt(chunk, None, None, do_classifier_free_guidance=False,
                                                     max_sequence_length=self.msl)
            for k, c in enumerate(chunk):
                self._emb[c] = (e[k], p[k])
        return (torch.stack([self._emb[p][0] for p in prompts]), torch.stack([self._emb[p][1] for p in prompts]))

    def velocity(self, x, s, emb, pooled, batch=128):
        torch = self.torch
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], batch):
                out.append(self.tr(hidden_states=x[i:i + batch], encoder_hidden_states=emb[i:i + batch],
                                   pooled_projections=pooled[i:i + batch], timestep=1000 * s[i:i + batch],
                                   return_dict=False)[0])
        return torch.cat(out)

    def encode_images(self, images):
        torch = self.torch
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() * 2 - 1
        with torch.no_grad():
            z = torch.cat([self.vae.encode(x[i:i + 32]).latent_dist.mean for i in range(0, len(x), 32)])
        return (z - self.shift) * self.scale

    def decode(self, lat):
        torch = self.torch
        with torch.no_grad():
            z = lat / self.scale + self.shift
            im = torch.cat([self.vae.decode(z[i:i + 32]).sample for i in range(0, len(z), 32)])
        return ((im + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()

    def noise(self, seed, res):
        torch = self.torch
        return torch.randn((1, 16, res // 8, res // 8), generator=torch.Generator().manual_seed(int(seed)))

    def generate(self, prompts, seeds, res, sigmas, sigma_hats, guidance, batch=64):
        """Euler with CFG; the transformer sees sigma_hat_i (or sigma_i), the update the true sigmas."""
        torch = self.torch
        cond = sigma_hats if sigma_hats is not None else sigmas[:-1]
        out = []
        for b0 in range(0, len(prompts), batch):
            P, S = prompts[b0:b0 + batch], seeds[b0:b0 + batch]
            n = len(P)
            e, p = self.embed(P)
            ne, np_ = self.embed([""] * n)
            x = torch.cat([self.noise(s, res) for s in S])
            for i in range(len(sigmas) - 1):
                s = torch.full((2 * n,), float(cond[i]))
                v = self.velocity(torch.cat([x, x]), s, torch.cat([ne, e]), torch.cat([np_, p]), batch=256)
                vu, vc = v[:n], v[n:]
                v = vu + guidance * (vc - vu) if guidance != 1 else vc
                x = x + (sigmas[i + 1] - sigmas[i]) * v
            out.append(self.decode(x))
        return np.concatenate(out)

    def step_losses(self, x0, eps, emb, pooled, sigma, sigma_next, cands):
        """Per-candidate, per-sample calibration loss [K, N] (x-space form)."""
        torch = self.torch
        n, K = x0.shape[0], len(cands)
        xi = (1 - sigma) * x0 + sigma * eps
        target = (1 - sigma_next) * x0 + sigma_next * eps
        X = xi.repeat(K, 1, 1, 1)
        s = torch.tensor(np.repeat(np.asarray(cands, dtype=np.float32), n))
        v = self.velocity(X, s, emb.repeat(K, 1, 1), pooled.repeat(K, 1), batch=256)
        pred = X + v * (sigma_next - sigma)
        return (pred - target.repeat(K, 1, 1, 1)).pow(2).mean(dim=(1, 2, 3)).view(K, n).double().numpy()

    def fingerprint(self):
        h = hashlib.sha256()
        for f in sorted((self.model_dir / "transformer").glob("*.safetensors")):
            with open(f, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                h.update(fh.read(n))
        return "py-sha256:" + h.hexdigest()[:16]


def grid_candidates(center, window, stride, lo, hi):
    kmax = int(round(window / stride))
    c = [center + k * stride for k in range(-kmax, kmax + 1)]
    return [min(max(round(v, 10), lo), hi) for v in c if lo - 1e-12 <= v <= hi + 1e-12]


def pick(cands, losses, sigma):
    """argmin of the mean loss; ties: the smaller loss, then the candidate nearest sigma_i."""
    m = losses.mean(1) if losses.ndim == 2 else losses
    order = sorted(range(len(cands)), key=lambda k: (m[k], abs(cands[k] - sigma)))
    return order[0]


def calibrate_py(B, res, steps, shift, folder, samples, seed, out_path, coarse_window=0.1, coarse_stride=0.01,
                 fine_window=0.01, fine_stride=0.001, widen=False):
    """NoiseShift coarse-to-fine grid search (NOISESHIFT.md), no CFG, captions as conditioning."""
    torch = B.torch
    t0 = time.time()
    files, caps = read_captions(folder)
    files, caps = files[:samples], caps[:samples]
    x0 = B.encode_images(load_folder_images(folder, files))
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=g)
    emb, pooled = B.embed(caps)
    sig = sigmas_for(steps, shift)
    rows, evals, u = [], 0, 1.0
    rng = np.random.default_rng(seed)
    for i in range(steps):
        s, sn = sig[i], sig[i + 1]
        coarse = grid_candidates(s, coarse_window, coarse_stride, 0.0, u) or [min(s, u)]
        Lc = B.step_losses(x0, eps, emb, pooled, s, sn, coarse)
        evals += Lc.size
        kc = pick(coarse, Lc, s)
        c = coarse[kc]
        edge = abs(abs(c - s) - coarse_window) < 1e-9 and abs(c - u) > 1e-9
        while widen and edge:
            # the next window out, on the side of the winner
            sign = 1 if c > s else -1
            more = [c + sign * k * coarse_stride for k in range(1, int(round(coarse_window / coarse_stride)) + 1)]
            more = [v for v in more if 0.0 <= v <= u]
            if not more:
                break
            Lm = B.step_losses(x0, eps, emb, pooled, s, sn, more)
            evals += Lm.size
            allc, allL = coarse + more, np.concatenate([Lc, Lm])
            kc = pick(allc, allL, s)
            coarse, Lc = allc, allL
            edge = coarse[kc] == more[-1] and abs(coarse[kc] - u) > 1e-9
            c = coarse[kc]
        fine = grid_candidates(c, fine_window, fine_stride, 0.0, u) or [c]
        Lf = B.step_losses(x0, eps, emb, pooled, s, sn, fine)
        evals += Lf.size
        kf = pick(fine, Lf, s)
        sh = fine[kf]
        nominal = float(B.step_losses(x0, eps, emb, pooled, s, sn, [min(s, 1.0)])[0].mean())
        evals += x0.shape[0]
        boots = []
        for _ in range(200):
            idx = rng.integers(0, Lf.shape[1], Lf.shape[1])
            boots.append(fine[pick(fine, Lf[:, idx], s)])
        rows.append({"sigma": s, "sigma_next": sn, "sigma_hat": sh, "loss_nominal": nominal,
                     "loss_calibrated": float(Lf[kf].mean()), "candidates": len(coarse) + len(fine),
                     "sigma_hat_stderr": float(np.std(boots)), "coarse_winner": c, "coarse_on_edge": bool(edge)})
        u = sh
        log(f"  [calibrate {res}px shift {shift:.3g}] step {i}: sigma {s:.4f} -> sigma_hat {sh:.4f} "
            f"(loss {nominal:.5f} -> {Lf[kf].mean():.5f}){' coarse winner on window edge' if edge else ''}")
    table = {
        "format": "noiseshift-calibration/1",
        "model": {"family": "sd3", "name": B.model_dir.name, "fingerprint": B.fingerprint()},
        "resolution": {"width": res, "height": res},
        "schedule": {"steps": steps, "shift": shift, "mu": None},
        "search": {"mode": "grid", "coarse_window": coarse_window, "coarse_stride": coarse_stride,
                   "fine_window": fine_window, "fine_stride": fine_stride, "samples": len(files), "seed": seed,
                   "guidance": 1.0, "widen": widen,
                   "dataset": {"images": str(folder / "images"), "captions": str(folder / "captions.jsonl")}},
        "steps": rows, "evaluations": int(evals), "device": "cpu (PyTorch, evaluate.py --backend diffusers)",
        "elapsed_seconds": time.time() - t0,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    os.replace(tmp, out_path)
    return table


def heldout_objective(B, res, steps, shift, folder, samples, table, seed):
    """Per-image mean over steps of the calibration loss at sigma_i and at sigma_hat_i."""
    torch = B.torch
    files, caps = read_captions(folder)
    files, caps = files[:samples], caps[:samples]
    x0 = B.encode_images(load_folder_images(folder, files))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    emb, pooled = B.embed(caps)
    sig = sigmas_for(steps, shift)
    nom, cal = [], []
    for i in range(steps):
        sh = table["steps"][i]["sigma_hat"]
        L = B.step_losses(x0, eps, emb, pooled, sig[i], sig[i + 1], [sig[i], sh])
        nom.append(L[0])
        cal.append(L[1])
    return np.mean(nom, axis=0), np.mean(cal, axis=0)


# ----------------------------------------------------------------------------------------------
# binary backend
# ----------------------------------------------------------------------------------------------

def run_cmd(cmd):
    log("  $ " + " ".join(f"'{c}'" if " " in c else c for c in cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


def model_args(model):
    return ["--model", str(model)] if model else []


def calibrate_bin(binary, model, res, steps, shift, folder, samples, out_path):
    run_cmd([binary, "calibrate", *model_args(model), "--width", str(res), "--height", str(res),
             "--steps", str(steps), "--shift", repr(shift), "--images", str(folder / "images"),
             "--captions", str(folder / "captions.jsonl"), "--samples", str(samples), "--out", str(out_path)])
    return json.loads(out_path.read_text())


def generate_bin(binary, model, prompt, seed, batch, res, steps, guidance, shift, table, out_png):
    run_cmd([binary, "generate", *model_args(model), "--prompt", prompt, "--negative-prompt", "",
             "--width", str(res), "--height", str(res), "--steps", str(steps), "--guidance", repr(guidance),
             "--shift", repr(shift), "--seed", str(seed), "--batch", str(batch),
             "--calibration", str(table) if table else "none", "--out", str(out_png)])
    stem = out_png.with_suffix("")
    files = [Path(f"{stem}-{j}.png") for j in range(batch)]
    if batch == 1 and not files[0].exists() and out_png.exists():
        files = [out_png]
    return [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0 for f in files]


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------

def bootstrap_ci(values_fn, n, reps, seed):
    rng = np.random.default_rng(seed)
    vals = [values_fn(rng.integers(0, n, n)) for _ in range(reps)]
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def cell_metrics(clf, gen, real_feats, prompts, reps, seed):
    import classifier as K
    feats, preds = K.run(clf, gen)
    adh = np.array([K.adherent(p, c) for p, c in zip(preds, prompts)], dtype=np.float64)
    fd = K.frechet(feats, real_feats)
    rng = np.random.default_rng(seed)
    fds = []
    for _ in range(reps):
        i = rng.integers(0, len(feats), len(feats))
        j = rng.integers(0, len(real_feats), len(real_feats))
        fds.append(K.frechet(feats[i], real_feats[j]))
    per_attr = {}
    for k in ("shape", "colour", "size", "position", "background"):
        ok = []
        for p, c in zip(preds, prompts):
            st = data.parse_caption(c)
            v = st["objects"][0].get(k) if k != "background" else st["background"]
            if v is not None:
                ok.append(p[k] == v)
        per_attr[k] = float(np.mean(ok)) if ok else None
    return {"fd": fd, "fd_ci": [float(np.percentile(fds, 2.5)), float(np.percentile(fds, 97.5))],
            "adherence": float(adh.mean()),
            "adherence_ci": bootstrap_ci(lambda i: adh[i].mean(), len(adh), 2000, seed + 1),
            "attribute_accuracy": per_attr, "n": int(len(gen))}


# ----------------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------------

def save_images(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for k, im in enumerate(images):
        data.save_png(im, folder / f"{k:05d}.png")


def load_images(folder, n):
    files = [folder / f"{k:05d}.png" for k in range(n)]
    if not all(f.exists() for f in files):
        return None
    return np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0 for f in files])


def make_grid(cells, prompts, resolutions, path, methods=("baseline", "noiseshift"), tile=128):
    """cells[(res, method)] = list of images (one per prompt)."""
    pad, head, left = 4, 34, 6
    cols = [(r, m) for r in resolutions for m in methods]
    W = left + len(cols) * (tile + pad) + 2 * pad * len(resolutions)
    H = head + len(prompts) * (tile + pad) + 12 * len(prompts) + 12
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    x = left
    for ci, (r, m) in enumerate(cols):
        if ci and cols[ci - 1][0] != r:
            x += 2 * pad
        d.text((x + 2, 4), f"{r}px", fill="black")
        d.text((x + 2, 18), m, fill="black")
        for pi in range(len(prompts)):
            im = cells[(r, m)][pi]
            t = Image.fromarray(data.to_uint8(im)).resize((tile, tile), Image.NEAREST)
            img.paste(t, (x, head + pi * (tile + pad)))
        x += tile + pad
    y = head + len(prompts) * (tile + pad) + 4
    for pi, p in enumerate(prompts):
        d.text((left, y + 12 * pi), f"row {pi + 1}: {p}", fill="black")
    img = img.crop((0, 0, W, y + 12 * len(prompts) + 6))
    img.save(path)


def fmt_ci(v, ci, nd=3):
    return f"{v:.{nd}f} [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"


def write_markdown(results, path, settings):
    lines = [f"NoiseShift on the built-in model ({settings['backend']} backend, {settings['steps']} steps, "
             f"guidance {settings['guidance']}, scheduler shift {settings['native_shift']}, "
             f"{settings['images_per_cell']} images per cell, calibration on {settings['samples']} images, "
             f"objective on {settings['heldout']} held-out images; 95 % bootstrap intervals)", "",
             "| resolution | method | shift | FD (classifier features) | prompt adherence | NoiseShift objective |",
             "|---|---|---|---|---|---|"]
    for c in results["cells"]:
        obj = c.get("objective")
        obj_s = fmt_ci(obj["mean"], obj["ci"], 5) if obj else "-"
        same = f" (= {c['same_as']})" if c.get("same_as") else ""
        lines.append(f"| {c['res']} px | {c['method']}{same} | {c['shift']:.3g} | {fmt_ci(c['fd'], c['fd_ci'], 2)} | "
                     f"{fmt_ci(c['adherence'], c['adherence_ci'], 3)} | {obj_s} |")
    lines += ["", "Reference (real renders through the VAE, vs real renders): " +
              ", ".join(f"{r} px FD {v['fd']:.2f}, adherence {v['adherence']:.3f}"
                        for r, v in results["vae_reference"].items()), ""]
    Path(path).write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["binary", "diffusers"], default="binary")
    ap.add_argument("--binary", default=str(REPO / "target" / "release" / "noiseshift"))
    ap.add_argument("--model", default=None, help="pipeline folder (binary: default its built-in model; "
                                                   "diffusers: default src/builtin/model)")
    ap.add_argument("--out", default="/tmp/noiseshift-eval")
    ap.add_argument("--native", type=int, default=128)
    ap.add_argument("--resolutions", default="128,96,64")
    ap.add_argument("--images-per-cell", type=int, default=500)
    ap.add_argument("--seeds-per-prompt", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--shift", type=float, default=None, help="native scheduler shift (default: the model's)")
    ap.add_argument("--samples", type=int, default=200, help="calibration images")
    ap.add_argument("--heldout", type=int, default=200, help="held-out images for the objective")
    ap.add_argument("--max-sequence-length", type=int, default=None)
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classifier", default=str(HERE / "classifier.pt"))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--tables", default=None,
                    help="use these calibration tables (<W>x<H>-<N>steps.json, e.g. calibrations/builtin) for the "
                         "native-shift NoiseShift cells instead of calibrating")
    ap.add_argument("--generate-only", action="store_true",
                    help="stop after the tables and images (to fill the cache from several processes, "
                         "e.g. one per resolution with the same --out; a last run without it scores)")
    a = ap.parse_args()
    t_start = time.time()
    out = Path(a.out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    resolutions = [int(r) for r in a.resolutions.split(",")]
    methods = a.methods.split(",")
    import torch
    torch.set_num_threads(a.threads)
    import classifier as K
    clf = K.load(a.classifier)

    model_dir = a.model or (str(REPO / "src" / "builtin" / "model") if a.backend == "diffusers" else None)
    meta = {}
    if model_dir and (Path(model_dir) / "noiseshift.json").exists():
        meta = json.loads((Path(model_dir) / "noiseshift.json").read_text())
    native_shift = a.shift
    if native_shift is None:
        if model_dir:
            sc = json.loads((Path(model_dir) / "scheduler" / "scheduler_config.json").read_text())
            native_shift = float(sc.get("shift", 1.0))
        else:
            native_shift = 1.0
    msl = a.max_sequence_length or meta.get("max_sequence_length", 8)
    B = Diffusers(model_dir, msl, a.threads) if a.backend == "diffusers" else None

    n_prompts = a.images_per_cell // a.seeds_per_prompt
    calib = {r: calibration_folder(out, r, a.samples) for r in resolutions}
    cal_caps = set()
    for r in resolutions:
        cal_caps.update(read_captions(calib[r])[1])
    prompts = eval_prompts(n_prompts, cal_caps)
    assert not set(prompts) & cal_caps
    cell_prompts = [p for p in prompts for _ in range(a.seeds_per_prompt)]
    cell_seeds = [GEN_SEED + k for k in range(len(cell_prompts))]
    settings = {"backend": a.backend, "steps": a.steps, "guidance": a.guidance, "native_shift": native_shift,
                "images_per_cell": len(cell_prompts), "prompts": n_prompts, "seeds_per_prompt": a.seeds_per_prompt,
                "samples": a.samples, "heldout": a.heldout, "max_sequence_length": msl, "model": model_dir,
                "resolutions": resolutions, "seeds": {"calibration_images": CAL_SEED, "heldout_images": HELD_SEED,
                                                      "prompts": PROMPT_SEED, "real": REAL_SEED,
                                                      "generation": GEN_SEED}}
    (out / "prompts.json").write_text(json.dumps(prompts, indent=1) + "\n")

    # calibration tables, one per (resolution, schedule)
    tables = {}
    for r in resolutions:
        for m in methods:
            if "noiseshift" not in m:
                continue
            shift = schedule_shift(m, r, a.native, native_shift)
            key = (r, round(shift, 6))
            if key in tables:
                continue
            p = out / "tables" / f"{r}x{r}-{a.steps}steps-shift{shift:.4g}.json"
            given = Path(a.tables) / f"{r}x{r}-{a.steps}steps.json" if a.tables else None
            if given and given.exists() and abs(shift - native_shift) < 1e-9:
                t = json.loads(given.read_text())
                assert t["schedule"]["steps"] == a.steps and abs(t["schedule"]["shift"] - shift) < 1e-9, given
                log(f"using {given} for {r}px")
                shutil.copy(given, p)
                tables[key] = t
                continue
            if p.exists():
                tables[key] = json.loads(p.read_text())
                continue
            log(f"calibrating {r}px, shift {shift:.4g}")
            if a.backend == "diffusers":
                tables[key] = calibrate_py(B, r, a.steps, shift, calib[r], a.samples, 0, p)
            else:
                tables[key] = calibrate_bin(a.binary, model_dir, r, a.steps, shift, calib[r], a.samples, p)
            tables[key]["_path"] = str(p)

    def table_path(r, shift):
        return out / "tables" / f"{r}x{r}-{a.steps}steps-shift{shift:.4g}.json"

    # generation
    gen = {}
    for r in resolutions:
        for m in methods:
            shift = schedule_shift(m, r, a.native, native_shift)
            use_ns = "noiseshift" in m
            folder = out / "gen" / f"{r}_{m.replace('+', '_')}"
            if m == "timeshift" and abs(shift - native_shift) < 1e-9 and (r, "baseline") in gen:
                gen[(r, m)] = gen[(r, "baseline")]
                continue
            if m == "timeshift+noiseshift" and abs(shift - native_shift) < 1e-9 and (r, "noiseshift") in gen:
                gen[(r, m)] = gen[(r, "noiseshift")]
                continue
            ims = load_images(folder, len(cell_prompts))
            if ims is None:
                t = time.time()
                log(f"generating {len(cell_prompts)} images: {r}px {m} (shift {shift:.4g})")
                if a.backend == "diffusers":
                    sig = sigmas_for(a.steps, shift)
                    sh = [s["sigma_hat"] for s in tables[(r, round(shift, 6))]["steps"]] if use_ns else None
                    ims = B.generate(cell_prompts, cell_seeds, r, sig, sh, a.guidance)
                else:
                    ims = []
                    tmp = out / "tmp_gen"
                    tmp.mkdir(exist_ok=True)
                    for pi, p in enumerate(prompts):
                        ims += generate_bin(a.binary, model_dir, p, cell_seeds[pi * a.seeds_per_prompt],
                                            a.seeds_per_prompt, r, a.steps, a.guidance, shift,
                                            table_path(r, shift) if use_ns else None, tmp / f"p{pi:04d}.png")
                    ims = np.stack(ims)
                    shutil.rmtree(tmp)
                save_images(folder, ims)
                log(f"  {time.time() - t:.0f}s")
            gen[(r, m)] = ims

    if a.generate_only:
        log(f"tables and images cached in {out} ({time.time() - t_start:.0f}s)")
        return

    # metrics
    results = {"settings": settings, "cells": [], "vae_reference": {}}
    for r in resolutions:
        real = real_images(r, len(cell_prompts))
        real_feats = K.features(clf, real)
        if B is not None:
            # the VAE's own ceiling: real renders encoded and decoded
            rec = B.decode(B.encode_images(np.stack([data.render(s, r) for s in
                                                     data.scene_set(len(cell_prompts), REAL_SEED + 1, single_only=True)])))
            ref_caps = [data.full_caption(s) for s in data.scene_set(len(cell_prompts), REAL_SEED + 1, single_only=True)]
            mref = cell_metrics(clf, rec, real_feats, ref_caps, a.bootstrap, 5)
            results["vae_reference"][r] = {"fd": mref["fd"], "fd_ci": mref["fd_ci"], "adherence": mref["adherence"]}
        objective = {}
        if B is not None:
            hf = heldout_folder(out, r, a.heldout)
        for m in methods:
            shift = schedule_shift(m, r, a.native, native_shift)
            mt = cell_metrics(clf, gen[(r, m)], real_feats, cell_prompts, a.bootstrap, 11)
            cell = {"res": r, "method": m, "shift": shift, **mt}
            if (m == "timeshift" and abs(shift - native_shift) < 1e-9) or \
               (m == "timeshift+noiseshift" and abs(shift - native_shift) < 1e-9):
                cell["same_as"] = "baseline" if m == "timeshift" else "noiseshift"
            key = (r, round(shift, 6))
            if key in tables:
                if B is not None:
                    if key not in objective:
                        objective[key] = heldout_objective(B, r, a.steps, shift, hf, a.heldout, tables[key], 123)
                    nom, cal = objective[key]
                    v = cal if "noiseshift" in m else nom
                    cell["objective"] = {"mean": float(v.mean()), "ci": bootstrap_ci(lambda i: v[i].mean(), len(v), 2000, 3),
                                         "source": f"held-out images ({a.heldout})"}
                    d = nom - cal
                    cell["objective_reduction"] = {"mean": float(d.mean()),
                                                   "ci": bootstrap_ci(lambda i: d[i].mean(), len(d), 2000, 4)}
                else:
                    st = tables[key]["steps"]
                    v = np.mean([s["loss_calibrated" if "noiseshift" in m else "loss_nominal"] for s in st])
                    cell["objective"] = {"mean": float(v), "ci": [float(v), float(v)],
                                         "source": "calibration table (calibration images)"}
                cell["sigma_hat"] = [s["sigma_hat"] for s in tables[key]["steps"]]
            results["cells"].append(cell)
            log(f"{r}px {m:22s} FD {mt['fd']:.3f} {mt['fd_ci']}  adherence {mt['adherence']:.3f} {mt['adherence_ci']}"
                + (f"  objective {cell['objective']['mean']:.5f}" if "objective" in cell else ""))

    # the grid: same prompts and seeds, baseline beside NoiseShift, per resolution
    grid_cells = {}
    for r in resolutions:
        for m in methods:
            shift = schedule_shift(m, r, a.native, native_shift)
            if a.backend == "diffusers":
                sig = sigmas_for(a.steps, shift)
                sh = [s["sigma_hat"] for s in tables[(r, round(shift, 6))]["steps"]] if "noiseshift" in m else None
                grid_cells[(r, m)] = list(B.generate(GRID_PROMPTS, [7] * len(GRID_PROMPTS), r, sig, sh, a.guidance))
            else:
                tmp = out / "tmp_grid"
                tmp.mkdir(exist_ok=True)
                grid_cells[(r, m)] = [generate_bin(a.binary, model_dir, p, 7, 1, r, a.steps, a.guidance, shift,
                                                   table_path(r, shift) if "noiseshift" in m else None,
                                                   tmp / f"g{pi}.png")[0] for pi, p in enumerate(GRID_PROMPTS)]
                shutil.rmtree(tmp)
    make_grid(grid_cells, GRID_PROMPTS, resolutions, out / "grid.png")
    make_grid(grid_cells, GRID_PROMPTS, resolutions, out / "grid_all.png", methods=methods)
    results["elapsed_seconds"] = time.time() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    md = write_markdown(results, out / "results.md", settings)
    print(md)
    log(f"evaluate.py finished in {time.time() - t_start:.0f}s ({(time.time() - t_start) / 60:.1f} min); "
        f"results in {out}/results.md, grid in {out}/grid.png")


if __name__ == "__main__":
    main()
