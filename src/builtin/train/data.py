#!/usr/bin/env python3
"""Procedural, captioned image set for noiseshift's built-in model (no downloads).

A *scene* is a plain dict (JSON-serialisable) that fully determines an image at any resolution:
positions and sizes are in units of the image side, shapes are drawn from signed distance
functions with analytic anti-aliasing, and the texture is a sum of seeded sinusoid gratings in the
same normalised coordinates plus a fine seeded grain. The same scene rendered at 64, 96 or 128 px
is the same picture at three samplings.

    scene = sample_scene(rng)                 # numpy Generator -> dict
    img = render(scene, 128)                  # float32 [H, W, 3] in [0, 1]
    cap = caption(scene, rng, p_omit=0.3)     # one random valid caption (attributes may be omitted)
    cap = full_caption(scene)                 # every attribute stated
    lab = labels(scene)                       # per-object shape/colour/size/position + background

CLI (writes what `noiseshift calibrate --images DIR --captions FILE` reads):

    python3 data.py --out DIR --n 200 --seed 1 --size 128 [--tsv] [--single-only] [--full-captions]

DIR/images/000000.png ..., DIR/captions.jsonl ({"file", "caption"} per line), DIR/captions.tsv
with --tsv (name<TAB>caption), DIR/labels.jsonl (file + the scene's labels + the scene itself).
"""

import argparse
import json
import math
import os
import sys

import numpy as np

SHAPES = ["circle", "square", "triangle", "ring", "star", "cross"]
COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 215, 35),
    "white": (242, 242, 242),
    "black": (22, 22, 22),
    "orange": (245, 135, 20),
    "purple": (135, 45, 175),
}
OBJECT_COLOURS = list(COLOURS)
BG_COLOURS_RGB = dict(COLOURS, grey=(128, 128, 128))
BG_COLOURS = ["grey", "white", "black", "red", "green", "blue", "yellow", "orange", "purple"]
BG_WEIGHTS = np.array([3, 2, 2, 1, 1, 1, 1, 1, 1], dtype=np.float64)
SIZES = ["small", "large"]
POSITIONS = ["centre", "left", "right", "top", "bottom"]
POSITION_PHRASES = {"centre": "in the centre", "left": "on the left", "right": "on the right",
                    "top": "at the top", "bottom": "at the bottom"}
RELATIONS = ["above", "below", "left of", "right of"]
BG_KINDS = ["plain", "gradient"]

# every word the grammar can produce (the tokenizer's merges spell each as one token)
GRAMMAR_WORDS = sorted(set(
    ["a", "an", "on", "the", "at", "in", "of", "background", "gradient"]
    + SHAPES + list(BG_COLOURS) + SIZES
    + " ".join(POSITION_PHRASES.values()).split() + " ".join(RELATIONS).split()))

# radius ranges (half extent, in image-side units)
SINGLE_R = {"small": (0.11, 0.16), "large": (0.23, 0.31)}
PAIR_R = {"small": (0.10, 0.135), "large": (0.165, 0.20)}


def article(word):
    return "an" if word[0] in "aeiou" else "a"


# ----------------------------------------------------------------------------------------------
# scenes
# ----------------------------------------------------------------------------------------------

def _pick(rng, items, weights=None):
    if weights is None:
        return items[int(rng.integers(len(items)))]
    p = np.asarray(weights, dtype=np.float64)
    return items[int(rng.choice(len(items), p=p / p.sum()))]


def _texture(rng, n=4, fmin=3.0, fmax=14.0):
    waves = []
    for _ in range(n):
        f = float(rng.uniform(fmin, fmax))
        a = float(rng.uniform(0, 2 * math.pi))
        waves.append([f * math.cos(a), f * math.sin(a), float(rng.uniform(0, 2 * math.pi)),
                      float(rng.uniform(0.3, 1.0))])
    return waves


def _object(rng, shape, colour, size, cx, cy, r):
    return {"shape": shape, "colour": colour, "size": size, "cx": cx, "cy": cy, "r": r,
            "rot": float(rng.uniform(-0.15, 0.15)),
            "jitter": [float(v) for v in rng.integers(-14, 15, size=3)],
            "tex": _texture(rng), "tex_amp": float(rng.uniform(0.04, 0.12))}


def sample_scene(rng, p_two=0.3, single_only=False, shape=None, colour=None, size=None,
                 position=None, background=None, bg_kind=None):
    """A random scene. Keyword arguments fix attributes of the (first) object / background."""
    two = (not single_only) and rng.random() < p_two
    bg = background or _pick(rng, BG_COLOURS, BG_WEIGHTS)
    kind = bg_kind or _pick(rng, BG_KINDS, [2, 1])
    scene = {"background": {"colour": bg, "kind": kind,
                            "grad_angle": float(rng.uniform(0, 2 * math.pi)),
                            "grad_amp": float(rng.uniform(0.18, 0.35)),
                            "jitter": [float(v) for v in rng.integers(-10, 11, size=3)],
                            "tex": _texture(rng, fmin=2.0, fmax=8.0),
                            "tex_amp": float(rng.uniform(0.02, 0.06))},
             "grain_seed": int(rng.integers(2**31 - 1)), "grain": float(rng.uniform(0.01, 0.03)),
             "relation": None, "objects": []}

    def obj_colour(avoid=()):
        choices = [c for c in OBJECT_COLOURS if c != bg and c not in avoid]
        return _pick(rng, choices)

    if not two:
        shp = shape or _pick(rng, SHAPES)
        col = colour or obj_colour()
        sz = size or _pick(rng, SIZES)
        pos = position or _pick(rng, POSITIONS)
        r = float(rng.uniform(*SINGLE_R[sz]))
        d = float(np.clip(0.5 - r - 0.05, 0.12, 0.26))
        cx, cy = {"centre": (0.5, 0.5), "left": (0.5 - d, 0.5), "right": (0.5 + d, 0.5),
                  "top": (0.5, 0.5 - d), "bottom": (0.5, 0.5 + d)}[pos]
        cx += float(rng.uniform(-0.03, 0.03))
        cy += float(rng.uniform(-0.03, 0.03))
        o = _object(rng, shp, col, sz, cx, cy, r)
        o["position"] = pos
        scene["objects"].append(o)
        return scene

    rel = _pick(rng, RELATIONS)
    scene["relation"] = rel
    a_col = colour or obj_colour()
    b_col = obj_colour()
    a_shape = shape or _pick(rng, SHAPES)
    b_shape = _pick(rng, SHAPES)
    a_size = size or _pick(rng, SIZES)
    b_size = _pick(rng, SIZES)
    # first object's place given the relation "A rel B"
    along = float(rng.uniform(0.40, 0.60))
    near, far = 0.27 + float(rng.uniform(-0.02, 0.02)), 0.73 + float(rng.uniform(-0.02, 0.02))
    if rel == "above":
        pa, pb, (ax, ay), (bx, by) = "top", "bottom", (along, near), (along + rng.uniform(-.05, .05), far)
    elif rel == "below":
        pa, pb, (ax, ay), (bx, by) = "bottom", "top", (along, far), (along + rng.uniform(-.05, .05), near)
    elif rel == "left of":
        pa, pb, (ax, ay), (bx, by) = "left", "right", (near, along), (far, along + rng.uniform(-.05, .05))
    else:
        pa, pb, (ax, ay), (bx, by) = "right", "left", (far, along), (near, along + rng.uniform(-.05, .05))
    for shp, col, sz, x, y, pos in ((a_shape, a_col, a_size, ax, ay, pa), (b_shape, b_col, b_size, bx, by, pb)):
        o = _object(rng, shp, col, sz, float(x), float(y), float(rng.uniform(*PAIR_R[sz])))
        o["position"] = pos
        scene["objects"].append(o)
    return scene


# ----------------------------------------------------------------------------------------------
# captions and labels
# ----------------------------------------------------------------------------------------------

def _np(obj, with_size, with_colour):
    words = []
    if with_size:
        words.append(obj["size"])
    if with_colour:
        words.append(obj["colour"])
    words.append(obj["shape"])
    return article(words[0]) + " " + " ".join(words)


def _bg_phrase(bg, with_kind):
    words = [bg["colour"]]
    if with_kind and bg["kind"] == "gradient":
        words.append("gradient")
    return "on " + article(words[0]) + " " + " ".join(words) + " background"


def caption(scene, rng=None, p_omit=0.0):
    """A caption of the scene; with rng and p_omit > 0 each optional attribute (size, colour,
    position, background, 'gradient', the second object's attributes) is dropped with
    probability p_omit. Shapes (and, for two objects, the relation) are always stated."""
    def keep():
        return rng is None or p_omit <= 0 or rng.random() >= p_omit

    objs = scene["objects"]
    bg = scene["background"]
    if scene["relation"] is None:
        text = _np(objs[0], keep(), keep())
        if keep():
            text += " " + POSITION_PHRASES[objs[0]["position"]]
    else:
        text = _np(objs[0], keep(), keep()) + " " + scene["relation"] + " " + _np(objs[1], keep(), keep())
    if keep():
        text += " " + _bg_phrase(bg, keep())
    return text


def full_caption(scene):
    return caption(scene)


def labels(scene):
    return {"objects": [{k: o[k] for k in ("shape", "colour", "size", "position")} for o in scene["objects"]],
            "relation": scene["relation"],
            "background": scene["background"]["colour"], "background_kind": scene["background"]["kind"]}


def parse_caption(text):
    """The attributes a caption states (None where omitted). Inverse of `caption`, for captions
    of the grammar; used to score prompt adherence."""
    words = text.strip().lower().split()
    out = {"objects": [], "relation": None, "background": None, "background_kind": None}
    i = 0

    def parse_np(i):
        assert words[i] in ("a", "an"), text
        i += 1
        o = {"shape": None, "colour": None, "size": None, "position": None}
        while words[i] not in SHAPES:
            if words[i] in SIZES:
                o["size"] = words[i]
            elif words[i] in COLOURS:
                o["colour"] = words[i]
            else:
                raise ValueError(f"unexpected word {words[i]!r} in {text!r}")
            i += 1
        o["shape"] = words[i]
        return o, i + 1

    o, i = parse_np(i)
    out["objects"].append(o)
    while i < len(words):
        rest = " ".join(words[i:])
        matched = False
        for pos, phrase in POSITION_PHRASES.items():
            if rest.startswith(phrase):
                out["objects"][0]["position"] = pos
                i += len(phrase.split())
                matched = True
                break
        if matched:
            continue
        for rel in RELATIONS:
            if rest.startswith(rel + " "):
                out["relation"] = rel
                i += len(rel.split())
                o2, i = parse_np(i)
                out["objects"].append(o2)
                matched = True
                break
        if matched:
            continue
        if words[i] == "on" and words[-1] == "background":
            bgw = words[i + 2:-1]
            out["background"] = bgw[0]
            out["background_kind"] = "gradient" if "gradient" in bgw else None
            break
        raise ValueError(f"cannot parse {text!r} at {words[i]!r}")
    if out["relation"] is not None:
        pa, pb = {"above": ("top", "bottom"), "below": ("bottom", "top"),
                  "left of": ("left", "right"), "right of": ("right", "left")}[out["relation"]]
        out["objects"][0]["position"], out["objects"][1]["position"] = pa, pb
    return out


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------

def _rot(px, py, a):
    c, s = math.cos(a), math.sin(a)
    return c * px + s * py, -s * px + c * py


def _sd_box(px, py, bx, by):
    qx, qy = np.abs(px) - bx, np.abs(py) - by
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _sd_triangle(px, py, r):
    # Inigo Quilez's sdEquilateralTriangle, apex up (image y grows downwards), circumradius r,
    # centroid at 0
    k = math.sqrt(3.0)
    s = r * k / 2.0  # half side
    px = np.abs(px) - s
    py = -py + s / k
    m = px + k * py > 0
    px2 = np.where(m, (px - k * py) / 2.0, px)
    py2 = np.where(m, (-k * px - py) / 2.0, py)
    px2 = px2 - np.clip(px2, -2.0 * s, 0.0)
    return -np.hypot(px2, py2) * np.sign(py2)


def _sd_star5(px, py, r, rf):
    # Inigo Quilez's sdStar5, apex up (image y grows downwards)
    py = -py
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    px = np.abs(px)
    d = k1x * px + k1y * py
    m = np.maximum(d, 0) * 2.0
    px, py = px - m * k1x, py - m * k1y
    d = k2x * px + k2y * py
    m = np.maximum(d, 0) * 2.0
    px, py = px - m * k2x, py - m * k2y
    px = np.abs(px)
    py = py - r
    bax, bay = rf * -k1y, rf * k1x - 1.0
    h = np.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0.0, r)
    return np.hypot(px - bax * h, py - bay * h) * np.sign(py * bax - px * bay)


def _sd_cross(px, py, r):
    w = 0.32 * r
    return np.minimum(_sd_box(px, py, r, w), _sd_box(px, py, w, r))


def shape_sdf(shape, px, py, r):
    if shape == "circle":
        return np.hypot(px, py) - r
    if shape == "square":
        return _sd_box(px, py, 0.86 * r, 0.86 * r)
    if shape == "triangle":
        return _sd_triangle(px, py * 1.0 - 0.12 * r, 1.12 * r)
    if shape == "ring":
        return np.abs(np.hypot(px, py) - 0.72 * r) - 0.28 * r
    if shape == "star":
        return _sd_star5(px, py + 0.05 * r, 1.08 * r, 0.45)
    if shape == "cross":
        return _sd_cross(px, py, r)
    raise ValueError(shape)


def _tex(waves, X, Y):
    t = np.zeros_like(X)
    tot = 0.0
    for fx, fy, ph, a in waves:
        t += a * np.sin(2 * math.pi * (fx * X + fy * Y) + ph)
        tot += a
    return t / max(tot, 1e-6)


def _rgb(name, jitter):
    return np.clip(np.array(BG_COLOURS_RGB[name], dtype=np.float32) + np.array(jitter, dtype=np.float32), 0, 255) / 255.0


def render(scene, width, height=None):
    """float32 image [H, W, 3] in [0, 1]. Coordinates: x right, y down, in units of the image
    width and height (the scene is square; non-square renders stretch it)."""
    height = height or width
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height
    X, Y = np.meshgrid(xs, ys)
    bg = scene["background"]
    base = _rgb(bg["colour"], bg["jitter"])
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = base
    if bg["kind"] == "gradient":
        a = bg["grad_angle"]
        g = ((X - 0.5) * math.cos(a) + (Y - 0.5) * math.sin(a)) * 2 * bg["grad_amp"]
        light = g[..., None]
        img = np.where(light > 0, img + (1 - img) * light, img * (1 + light))
    img = img * (1 + bg["tex_amp"] * _tex(bg["tex"], X, Y))[..., None]
    px_scale = float(min(width, height))
    for o in scene["objects"]:
        dx, dy = _rot(X - o["cx"], Y - o["cy"], o["rot"])
        sd = shape_sdf(o["shape"], dx, dy, o["r"])
        cov = np.clip(0.5 - sd * px_scale, 0.0, 1.0)[..., None]
        col = _rgb(o["colour"], o["jitter"])
        shade = 1 + o["tex_amp"] * _tex(o["tex"], X, Y)
        # a soft light from the top left so that the shapes are not flat
        shade = shade + 0.10 * (-(dx + dy) / max(o["r"], 1e-3))
        fill = np.clip(col[None, None, :] * shade[..., None], 0, 1)
        if o["colour"] == "black":
            fill = np.clip(fill + 0.05 * (1 + _tex(o["tex"], X * 1.7, Y * 1.7)[..., None]), 0, 1)
        img = img * (1 - cov) + fill * cov
    grain = np.random.default_rng(scene["grain_seed"] + 7919 * width).standard_normal(img.shape).astype(np.float32)
    img = img + scene["grain"] * grain
    return np.clip(img, 0.0, 1.0)


def to_uint8(img):
    return (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def save_png(img, path):
    from PIL import Image
    Image.fromarray(to_uint8(img)).save(path)


# ----------------------------------------------------------------------------------------------
# sets
# ----------------------------------------------------------------------------------------------

def scene_set(n, seed, **kwargs):
    """n scenes from one seed (scene k depends only on (seed, k))."""
    return [sample_scene(np.random.default_rng([seed, k]), **kwargs) for k in range(n)]


def caption_rng(seed, k):
    return np.random.default_rng([seed, k, 1])


def write_folder(out, n, seed, size, tsv=False, single_only=False, full_captions=False, p_omit=0.3,
                 width=None, height=None, quiet=False):
    width = width or size
    height = height or size
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    scenes = scene_set(n, seed, single_only=single_only)
    cap_lines, tsv_lines, lab_lines = [], [], []
    for k, sc in enumerate(scenes):
        name = f"{k:06d}.png"
        save_png(render(sc, width, height), os.path.join(out, "images", name))
        cap = full_caption(sc) if full_captions else caption(sc, caption_rng(seed, k), p_omit)
        cap_lines.append(json.dumps({"file": name, "caption": cap}))
        tsv_lines.append(f"{name}\t{cap}")
        lab_lines.append(json.dumps({"file": name, "caption": cap, "full_caption": full_caption(sc),
                                     "labels": labels(sc), "scene": sc}))
        if not quiet and (k + 1) % 500 == 0:
            print(f"{k + 1}/{n}", file=sys.stderr)
    with open(os.path.join(out, "captions.jsonl"), "w") as f:
        f.write("\n".join(cap_lines) + "\n")
    if tsv:
        with open(os.path.join(out, "captions.tsv"), "w") as f:
            f.write("\n".join(tsv_lines) + "\n")
    with open(os.path.join(out, "labels.jsonl"), "w") as f:
        f.write("\n".join(lab_lines) + "\n")
    return scenes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (images/, captions.jsonl, labels.jsonl)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size", type=int, default=128, help="square side in pixels")
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--tsv", action="store_true", help="also write captions.tsv (name<TAB>caption)")
    ap.add_argument("--single-only", action="store_true", help="one object per image")
    ap.add_argument("--full-captions", action="store_true", help="state every attribute")
    ap.add_argument("--p-omit", type=float, default=0.3, help="probability of dropping each optional attribute")
    a = ap.parse_args(argv)
    write_folder(a.out, a.n, a.seed, a.size, tsv=a.tsv, single_only=a.single_only,
                 full_captions=a.full_captions, p_omit=a.p_omit, width=a.width, height=a.height)
    print(f"wrote {a.n} images to {a.out}")


if __name__ == "__main__":
    main()
