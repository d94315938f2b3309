#!/usr/bin/env python3
"""Train noiseshift's built-in SD3-architecture model on the procedural set, on a CPU.

Stages, run in order; each is resumable (checkpoints every --ckpt-seconds under RUN/), and a
finished stage is skipped:

  vae      AutoencoderKL (16 latent ch, /8) on freshly rendered scenes (64/96/128 px, 64 px crops):
           L1 + 0.5 * L1 of image gradients + 1e-5 * KL (per element)
  latents  shift/scale from the data (SD3 convention latent = (z - shift) * scale), then the
           posterior means of the fixed training scenes at 128, 96 and 64 px (and held-out ones)
  mixed    SD3Transformer2DModel, rectified flow (x_t = (1-t) x0 + t eps, target eps - x0,
           timestep 1000 t), logit-normal t (m 0, s 1), 10 % empty captions; one resolution per
           batch, drawn uniformly from 64/96/128 px
  native   the same, 128 px only (SD3's last, high-resolution stage)
  export   the EMA weights as a diffusers StableDiffusion3Pipeline folder, f16: RUN/model

    OMP_NUM_THREADS=1 nohup python3 train.py --run /work/builtin-run/run1 --resume > log 2>&1 &

Settings go to RUN/settings.json, loss curves to RUN/curves.json and RUN/curves_*.png.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import components as C  # noqa: E402
import data  # noqa: E402
from plot import line_plot, smooth  # noqa: E402

import diffusers  # noqa: E402
from diffusers import AutoencoderKL, SD3Transformer2DModel, StableDiffusion3Pipeline  # noqa: E402

diffusers.utils.logging.set_verbosity_error()

DEFAULTS = dict(
    seed=18,
    threads=1,
    train_scene_seed=1000,            # training scenes: data.scene_set(n, 1000)
    val_scene_seed=2000,              # held-out scenes for the validation losses
    n_train={"128": 30000, "96": 20000, "64": 20000},
    n_val=128,
    p_two=0.3,
    vae=dict(steps=2000, batch=8, lr=1e-3, lr_end=1e-4, warmup=100, crop=64,
             res_probs={"64": 0.3, "96": 0.3, "128": 0.4}, kl_weight=1e-5, grad_weight=0.5),
    mixed=dict(steps=3500, batch=32, lr=4e-4, lr_end=4e-4, warmup=300, res=[64, 96, 128]),
    native=dict(steps=3000, batch=32, lr=2e-4, lr_end=2e-5, warmup=0, res=[128]),
    ema_decay=0.999,
    caption_dropout=0.1,
    p_omit_choices=[0.0, 0.25, 0.5],
    grad_clip=1.0,
    weight_decay=0.0,
    val_every=250,
    log_every=20,
)


def now():
    return time.time()


def atomic_save(obj, path):
    tmp = str(path) + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_json(obj, path):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def lr_at(cfg, step):
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    frac = (step - cfg["warmup"]) / max(1, cfg["steps"] - cfg["warmup"])
    return cfg["lr_end"] + 0.5 * (cfg["lr"] - cfg["lr_end"]) * (1 + math.cos(math.pi * frac))


class Run:
    def __init__(self, root, settings):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.s = settings
        self.curves_path = self.root / "curves.json"
        self.curves = json.loads(self.curves_path.read_text()) if self.curves_path.exists() else {}
        self.done_path = self.root / "done.json"
        self.done = json.loads(self.done_path.read_text()) if self.done_path.exists() else {}

    def mark_done(self, stage, info):
        self.done[stage] = info
        atomic_json(self.done, self.done_path)

    def save_curves(self):
        atomic_json(self.curves, self.curves_path)
        for name, c in self.curves.items():
            series = []
            for key, pts in c.items():
                if not pts:
                    continue
                xs = [p[0] for p in pts]
                ys = [p[1] for p in pts]
                if key.startswith("train"):
                    ys = smooth(ys, 10)
                series.append((key, xs, ys))
            try:
                line_plot(series, self.root / f"curves_{name}.png", title=f"{name} loss", xlabel="step", ylabel="loss")
            except Exception as e:  # a plot must never stop training
                print("plot failed:", e, flush=True)


# ----------------------------------------------------------------------------------------------
# VAE
# ----------------------------------------------------------------------------------------------

def vae_batch(s, step):
    cfg = s["vae"]
    rng = np.random.default_rng([s["seed"], 11, step])
    keys = sorted(cfg["res_probs"])
    p = np.array([cfg["res_probs"][k] for k in keys])
    res = int(keys[int(rng.choice(len(keys), p=p / p.sum()))])
    ims = []
    for _ in range(cfg["batch"]):
        sc = data.sample_scene(rng, p_two=s["p_two"])
        im = data.render(sc, res)
        if res > cfg["crop"]:
            y, x = rng.integers(0, res - cfg["crop"] + 1, size=2)
            im = im[y:y + cfg["crop"], x:x + cfg["crop"]]
        ims.append(im)
    x = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).contiguous()
    return x * 2 - 1


def image_grad_l1(x, y):
    dx = lambda a: a[..., :, 1:] - a[..., :, :-1]  # noqa: E731
    dy = lambda a: a[..., 1:, :] - a[..., :-1, :]  # noqa: E731
    return (dx(x) - dx(y)).abs().mean() + (dy(x) - dy(y)).abs().mean()


def vae_eval_set(s, n=32, res=128):
    scenes = data.scene_set(n, s["val_scene_seed"] + 1, p_two=s["p_two"])
    x = torch.from_numpy(np.stack([data.render(sc, res) for sc in scenes])).permute(0, 3, 1, 2)
    return x * 2 - 1


@torch.no_grad()
def vae_psnr(vae, x):
    y = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    mse = ((y - x) / 2).pow(2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(1 / mse)).mean())


def resume(ck, model, opt, stage):
    """Load a stage's checkpoint into model and optimiser; its dict, or None when there is none."""
    if not ck.exists():
        return None
    st = torch.load(ck, weights_only=False)
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["opt"])
    print(f"[{stage}] resumed at step {st['step']}", flush=True)
    return st


def stage_vae(run, args):
    s = run.s
    cfg = s["vae"]
    ck = run.root / "vae_ckpt.pt"
    torch.manual_seed(s["seed"])
    vae = AutoencoderKL(**C.VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg["lr"], betas=(0.9, 0.99), weight_decay=0.0)
    st = resume(ck, vae, opt, "vae")
    step = st["step"] if st else 0
    curves = run.curves.setdefault("vae", {"train_loss": [], "val_psnr_128": []})
    xval = vae_eval_set(s)
    t_last, t0, acc = now(), now(), []
    vae.train()
    while step < cfg["steps"]:
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        x = vae_batch(s, step)
        post = vae.encode(x).latent_dist
        gen = torch.Generator().manual_seed(s["seed"] * 1000003 + step)
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        y = vae.decode(z).sample
        rec = (y - x).abs().mean()
        grad = image_grad_l1(y, x)
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        loss = rec + cfg["grad_weight"] * grad + cfg["kl_weight"] * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), s["grad_clip"])
        opt.step()
        step += 1
        acc.append([float(rec), float(grad), float(kl)])
        if step % s["log_every"] == 0:
            m = np.mean(acc, axis=0)
            acc = []
            curves["train_loss"].append([step, float(m[0])])
            el = now() - t0
            print(f"[vae] step {step}/{cfg['steps']} l1 {m[0]:.4f} grad {m[1]:.4f} kl {m[2]:.3f} "
                  f"lr {lr_at(cfg, step):.2e} {el:.0f}s", flush=True)
        if step % 250 == 0 or step == cfg["steps"]:
            vae.eval()
            p = vae_psnr(vae, xval)
            vae.train()
            curves["val_psnr_128"].append([step, p])
            print(f"[vae] step {step} val PSNR@128 {p:.2f} dB", flush=True)
        if now() - t_last > args.ckpt_seconds or step == cfg["steps"]:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ck)
            run.save_curves()
            t_last = now()
    vae.eval()
    vae.save_pretrained(run.root / "vae_trained", safe_serialization=True)
    run.mark_done("vae", {"steps": step, "samples": step * cfg["batch"], "val_psnr_128": vae_psnr(vae, xval)})


# ----------------------------------------------------------------------------------------------
# latents
# ----------------------------------------------------------------------------------------------

def load_vae(run):
    return AutoencoderKL.from_pretrained(run.root / "vae_trained").eval()


@torch.no_grad()
def encode_scenes(vae, scenes, res, batch=16):
    out = []
    for i in range(0, len(scenes), batch):
        x = torch.from_numpy(np.stack([data.render(sc, res) for sc in scenes[i:i + batch]])).permute(0, 3, 1, 2)
        out.append(vae.encode(x * 2 - 1).latent_dist.mean.to(torch.float16))
    return torch.cat(out)


def stage_latents(run, args):
    s = run.s
    vae = load_vae(run)
    d = run.root / "latents"
    d.mkdir(exist_ok=True)
    stats_path = run.root / "latent_stats.json"
    if not stats_path.exists():
        sc = data.scene_set(512, s["train_scene_seed"], p_two=s["p_two"])
        z = encode_scenes(vae, sc, 128).float()
        shift, std = float(z.mean()), float(z.std())
        per_ch = z.permute(1, 0, 2, 3).reshape(16, -1)
        stats = {"shift_factor": shift, "scaling_factor": 1.0 / std, "std": std,
                 "per_channel_mean": per_ch.mean(1).tolist(), "per_channel_std": per_ch.std(1).tolist()}
        atomic_json(stats, stats_path)
        print("[latents] stats", json.dumps(stats), flush=True)
    chunk = 1000
    only = [int(r) for r in args.latent_res.split(",")] if args.latent_res else None
    for res_key, n in sorted(s["n_train"].items(), key=lambda kv: -int(kv[0])):
        res = int(res_key)
        if only and res not in only:
            continue
        final = d / f"train_{res}.pt"
        if final.exists():
            continue
        scenes = data.scene_set(n, s["train_scene_seed"], p_two=s["p_two"])
        parts = []
        for c0 in range(0, n, chunk):
            p = d / f"train_{res}_{c0:06d}.pt"
            if not p.exists():
                t = now()
                atomic_save(encode_scenes(vae, scenes[c0:c0 + chunk], res), p)
                print(f"[latents] {res}px {c0 + chunk}/{n} ({now() - t:.0f}s/chunk)", flush=True)
            parts.append(p)
        atomic_save(torch.cat([torch.load(p) for p in parts]), final)
        for p in parts:
            p.unlink()
    for res in (128, 96, 64):
        if only and res not in only:
            continue
        p = d / f"val_{res}.pt"
        if not p.exists():
            scenes = data.scene_set(s["n_val"], s["val_scene_seed"], p_two=s["p_two"])
            atomic_save(encode_scenes(vae, scenes, res), p)
    if only:
        return  # a helper process for some resolutions: the full stage marks itself done
    run.mark_done("latents", json.loads(stats_path.read_text()))


# ----------------------------------------------------------------------------------------------
# transformer
# ----------------------------------------------------------------------------------------------

class TextSide:
    def __init__(self, run):
        folder = run.root / "textside"
        toks, encs = C.build_text_side(folder)
        self.encoder = C.PromptEncoder(toks, encs)
        self.encoders = encs
        self.tokenizers = toks
        self.empty = self.encoder([""])

    def __call__(self, captions):
        e, p = self.encoder._encode(captions)
        return e, p


def sample_captions(s, scenes, idx, rng):
    caps = []
    for i in idx:
        if rng.random() < s["caption_dropout"]:
            caps.append("")
        else:
            p = float(rng.choice(s["p_omit_choices"]))
            caps.append(data.caption(scenes[int(i)], rng, p))
    return caps


def flow_loss(model, x0, emb, pooled, gen, t=None):
    b = x0.shape[0]
    if t is None:
        t = torch.sigmoid(torch.randn(b, generator=gen))
    eps = torch.randn(x0.shape, generator=gen)
    tt = t.view(b, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * eps
    v = model(hidden_states=xt, encoder_hidden_states=emb, pooled_projections=pooled, timestep=1000 * t,
              return_dict=False)[0]
    return (v - (eps - x0)).pow(2).mean(dim=(1, 2, 3))


class Data:
    def __init__(self, run):
        s = run.s
        st = json.loads((run.root / "latent_stats.json").read_text())
        self.shift, self.scale = st["shift_factor"], st["scaling_factor"]
        self.lat = {}
        self.val = {}
        for res in (128, 96, 64):
            self.lat[res] = torch.load(run.root / "latents" / f"train_{res}.pt")
            self.val[res] = torch.load(run.root / "latents" / f"val_{res}.pt")
        n = max(s["n_train"].values())
        self.scenes = data.scene_set(int(n), s["train_scene_seed"], p_two=s["p_two"])
        self.val_scenes = data.scene_set(s["n_val"], s["val_scene_seed"], p_two=s["p_two"])

    def x0(self, z):
        return (z.float() - self.shift) * self.scale


@torch.no_grad()
def val_losses(model, D, text, s):
    """Flow-matching loss on held-out scenes (full captions) at fixed t and noise, per resolution."""
    model.eval()
    out = {}
    caps = [data.full_caption(sc) for sc in D.val_scenes]
    emb, pooled = text(caps)
    ts = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
    for res in (128, 96, 64):
        x0 = D.x0(D.val[res])
        tot = []
        for k, t in enumerate(ts):
            gen = torch.Generator().manual_seed(777 + k)
            tot.append(flow_loss(model, x0, emb, pooled, gen, t=t.repeat(len(x0))).mean())
        out[res] = float(torch.stack(tot).mean())
    model.train()
    return out


def stage_transformer(run, args, stage):
    s = run.s
    cfg = s[stage]
    ck = run.root / f"{stage}_ckpt.pt"
    D = Data(run)
    text = TextSide(run)
    torch.manual_seed(s["seed"] + 1)
    model = SD3Transformer2DModel(**C.TRANSFORMER_CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.99), weight_decay=s["weight_decay"])
    ema = None
    step = 0
    st = resume(ck, model, opt, stage)
    if st:
        ema = st["ema"]
        step = st["step"]
    elif stage == "native":
        st = torch.load(run.root / "mixed_ckpt.pt", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        ema = st["ema"]
        print("[native] starting from the mixed stage's final weights, EMA and optimizer", flush=True)
    if ema is None:
        ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    curves = run.curves.setdefault(stage, {})
    for res in cfg["res"]:
        curves.setdefault(f"train_{res}", [])
    for res in (128, 96, 64):
        curves.setdefault(f"val_ema_{res}", [])
    stage_id = {"mixed": 21, "native": 22}[stage]
    t_last, t0, acc, step0 = now(), now(), {}, step
    model.train()
    while step < cfg["steps"]:
        lr = lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        rng = np.random.default_rng([s["seed"], stage_id, step])
        res = int(cfg["res"][int(rng.integers(len(cfg["res"])))])
        n = len(D.lat[res])
        idx = rng.integers(0, n, size=cfg["batch"])
        caps = sample_captions(s, D.scenes, idx, rng)
        emb, pooled = text(caps)
        x0 = D.x0(D.lat[res][torch.from_numpy(idx)])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        loss = flow_loss(model, x0, emb, pooled, gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s["grad_clip"])
        opt.step()
        step += 1
        d = min(s["ema_decay"], (1 + step) / (10 + step)) if stage == "mixed" else s["ema_decay"]
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(d).add_(v.float(), alpha=1 - d)
        acc.setdefault(res, []).append(float(loss))
        if step % s["log_every"] == 0:
            msg = []
            for r, v in sorted(acc.items()):
                curves[f"train_{r}"].append([step, float(np.mean(v))])
                msg.append(f"{r}px {np.mean(v):.4f}")
            acc = {}
            el = now() - t0
            rate = (step - step0) * cfg["batch"] / max(el, 1e-6)
            eta = (cfg["steps"] - step) * cfg["batch"] / max(rate, 1e-6)
            print(f"[{stage}] step {step}/{cfg['steps']} loss {' '.join(msg)} lr {lr:.2e} "
                  f"{rate:.1f} samples/s eta {eta / 60:.0f} min", flush=True)
        if step % s["val_every"] == 0 or step == cfg["steps"]:
            live = {k: v.clone() for k, v in model.state_dict().items()}
            model.load_state_dict(ema)
            vl = val_losses(model, D, text, s)
            model.load_state_dict(live)
            for r, v in vl.items():
                curves[f"val_ema_{r}"].append([step, v])
            print(f"[{stage}] step {step} val (EMA) " + " ".join(f"{r}px {v:.4f}" for r, v in vl.items()), flush=True)
        if now() - t_last > args.ckpt_seconds or step == cfg["steps"]:
            atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "ema": ema, "step": step}, ck)
            run.save_curves()
            t_last = now()
    info = {"steps": step, "samples": step * cfg["batch"]}
    if curves[f"val_ema_128"]:
        info["final_val_ema"] = {r: curves[f"val_ema_{r}"][-1][1] for r in (128, 96, 64)}
    run.mark_done(stage, info)


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------

def build_pipeline(run, which="native"):
    stats = json.loads((run.root / "latent_stats.json").read_text())
    vae_cfg = dict(C.VAE_CONFIG, scaling_factor=stats["scaling_factor"], shift_factor=stats["shift_factor"])
    vae = AutoencoderKL(**vae_cfg)
    vae.load_state_dict(load_vae(run).state_dict())
    tr = SD3Transformer2DModel(**C.TRANSFORMER_CONFIG)
    st = torch.load(run.root / f"{which}_ckpt.pt", weights_only=False)
    tr.load_state_dict(st["ema"])
    toks, encs = C.build_text_side(run.root / "textside")
    pipe = StableDiffusion3Pipeline(
        transformer=tr.eval(), scheduler=C.scheduler(), vae=vae.eval(),
        text_encoder=encs[0], tokenizer=toks[0], text_encoder_2=encs[1], tokenizer_2=toks[1],
        text_encoder_3=None, tokenizer_3=None)
    return pipe


def export(run, out, which="native"):
    out = Path(out)
    pipe = build_pipeline(run, which)
    pipe = pipe.to(torch.float16)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp, safe_serialization=True)
    # transformers 5 saves only tokenizer.json: add the classic CLIP files (vocab.json, merges.txt,
    # special_tokens_map.json, and our tokenizer_config.json) so readers of either form work
    for sub in ("tokenizer", "tokenizer_2"):
        for f in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
            shutil.copy(run.root / "textside" / sub / f, tmp / sub / f)
    meta = {
        "name": "noiseshift-builtin-shapes",
        "native_resolution": C.NATIVE, "low_resolutions": list(C.LOW),
        "max_sequence_length": C.MAX_SEQUENCE_LENGTH, "tokenizer_max_length": C.TOKENIZER_MAX_LENGTH,
        "scheduler_shift": C.SCHEDULER_SHIFT, "text_encoders": "frozen at seeded initialisation",
        "default_steps": 20, "default_guidance": 4.0,
        "trained_from": which, "training": run.done, "settings": run.s,
    }
    (tmp / "noiseshift.json").write_text(json.dumps(meta, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def init_from_export(root, folder, native_step):
    """Rebuild a run from an exported pipeline folder (when the run directory was lost): settings,
    VAE, latent statistics and text side from the folder, its transformer as the native stage's weights
    and EMA at native_step with a fresh optimizer. The latents stage re-encodes with the exported VAE."""
    folder = Path(folder)
    meta = json.loads((folder / "noiseshift.json").read_text())
    root.mkdir(parents=True, exist_ok=True)
    atomic_json(meta["settings"], root / "settings.json")
    vae = AutoencoderKL.from_pretrained(folder / "vae").float()
    vae.register_to_config(scaling_factor=1.0, shift_factor=0.0)
    vae.save_pretrained(root / "vae_trained", safe_serialization=True)
    atomic_json(meta["training"]["latents"], root / "latent_stats.json")
    C.build_text_side(root / "textside")
    tr = SD3Transformer2DModel.from_pretrained(folder / "transformer").float()
    sd = {k: v.detach().clone() for k, v in tr.state_dict().items()}
    opt = torch.optim.AdamW(tr.parameters(), lr=meta["settings"]["native"]["lr"], betas=(0.9, 0.99),
                            weight_decay=meta["settings"]["weight_decay"])
    atomic_save({"model": sd, "opt": opt.state_dict(), "ema": {k: v.clone() for k, v in sd.items()},
                 "step": native_step}, root / "native_ckpt.pt")
    done = {k: v for k, v in meta["training"].items() if k in ("vae", "mixed", "_wall")}
    done["restored_from_export"] = {"folder": str(folder), "native_step": native_step,
                                    "note": "optimizer state restarted; weights were f16-rounded"}
    atomic_json(done, root / "done.json")
    print(f"[init] run rebuilt in {root} from {folder} at native step {native_step}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="/work/builtin-run/run1")
    ap.add_argument("--resume", action="store_true", help="continue a run (settings are read from it)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt-seconds", type=float, default=180)
    ap.add_argument("--stages", default="vae,latents,mixed,native,export")
    ap.add_argument("--export-to", default=None, help="also copy the exported pipeline folder here")
    ap.add_argument("--latent-res", default=None, help="latents stage: only these resolutions (a helper process)")
    ap.add_argument("--smoke", action="store_true", help="a tiny run that checks every stage end to end")
    ap.add_argument("--init-from", default=None, metavar="FOLDER",
                    help="rebuild a lost run from an exported pipeline folder, then continue it")
    ap.add_argument("--init-native-step", type=int, default=0, help="with --init-from: the native step it was at")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.run)
    if args.init_from:
        if (root / "settings.json").exists():
            sys.exit(f"{root} already holds a run: --init-from needs a new directory")
        init_from_export(root, args.init_from, args.init_native_step)
        args.resume = True
    sp = root / "settings.json"
    if sp.exists():
        if not args.resume:
            sys.exit(f"{root} already holds a run: pass --resume to continue it")
        settings = json.loads(sp.read_text())
    else:
        root.mkdir(parents=True, exist_ok=True)
        base = json.loads(json.dumps(DEFAULTS))
        if args.smoke:
            base.update(n_train={"128": 48, "96": 32, "64": 32}, n_val=8, val_every=5, log_every=2)
            base["vae"].update(steps=6, warmup=2)
            base["mixed"].update(steps=8, warmup=2, batch=4)
            base["native"].update(steps=6, batch=4)
        settings = dict(base, threads=args.threads,
                        components={"vae": C.VAE_CONFIG, "transformer": C.TRANSFORMER_CONFIG,
                                    "clip_l": C.CLIP_L, "clip_g": C.CLIP_G,
                                    "max_sequence_length": C.MAX_SEQUENCE_LENGTH,
                                    "scheduler_shift": C.SCHEDULER_SHIFT},
                        versions={"torch": torch.__version__, "diffusers": diffusers.__version__,
                                  "numpy": np.__version__})
        atomic_json(settings, sp)
    run = Run(root, settings)
    times = run.done.get("_wall", {})
    for stage in args.stages.split(","):
        if stage in run.done and stage != "export":
            print(f"[{stage}] done already: {run.done[stage]}", flush=True)
            continue
        t = now()
        print(f"[{stage}] start, {torch.get_num_threads()} thread(s)", flush=True)
        if stage == "vae":
            stage_vae(run, args)
        elif stage == "latents":
            stage_latents(run, args)
        elif stage in ("mixed", "native"):
            stage_transformer(run, args, stage)
        elif stage == "export":
            out = export(run, root / "model")
            if args.export_to:
                dst = Path(args.export_to)
                if dst.exists():
                    shutil.rmtree(dst)
                shutil.copytree(out, dst)
            run.mark_done("export", {"folder": str(out)})
        times[stage] = times.get(stage, 0) + now() - t
        run.done["_wall"] = times
        atomic_json(run.done, run.done_path)
        print(f"[{stage}] finished in {now() - t:.0f}s", flush=True)
    print("all stages done:", json.dumps(run.done.get("_wall", {})), flush=True)


if __name__ == "__main__":
    main()
