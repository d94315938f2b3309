#!/usr/bin/env python3
"""Check an exported built-in model folder: it loads in diffusers, its files are small, its
tokenizers read both from tokenizer.json and from the classic vocab.json + merges.txt, and the
stock StableDiffusion3Pipeline.__call__ draws recognisable images of the three required prompts.

    python3 verify.py [--model src/builtin/model] [--out /work/builtin-run/samples.png]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import components as C  # noqa: E402
import data  # noqa: E402

PROMPTS = ["a red circle", "a blue square", "a green triangle on a white background"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE.parent / "model"))
    ap.add_argument("--out", default="/work/builtin-run/samples.png")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = Path(a.model)
    total = sum(f.stat().st_size for f in model.rglob("*") if f.is_file())
    print(f"{model}: {total / 1e6:.2f} MB in {sum(1 for f in model.rglob('*') if f.is_file())} files")
    assert total < 15e6

    from transformers import CLIPTokenizer, CLIPTokenizerFast
    caps = [data.caption(s, data.caption_rng(77, k), 0.3) for k, s in enumerate(data.scene_set(500, 77))] + PROMPTS
    for sub in ("tokenizer", "tokenizer_2"):
        with tempfile.TemporaryDirectory() as d:
            for f in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
                shutil.copy(model / sub / f, Path(d) / f)
            classic = CLIPTokenizer.from_pretrained(d)
            fast_classic = CLIPTokenizerFast.from_pretrained(d)
            full = CLIPTokenizer.from_pretrained(model / sub)
            for c in caps:
                ids = full(c, padding="max_length", max_length=77).input_ids
                assert ids == classic(c, padding="max_length", max_length=77).input_ids == \
                    fast_classic(c, padding="max_length", max_length=77).input_ids, c
                assert full.unk_token_id not in ids[1:ids.index(full.eos_token_id)], c
        print(f"{sub}: vocab {len(full)}, pad {full.pad_token!r} = {full.pad_token_id}, "
              f"'a red circle' -> {full('a red circle').input_ids}; classic files == tokenizer.json on {len(caps)} captions")

    from diffusers import StableDiffusion3Pipeline
    pipe = StableDiffusion3Pipeline.from_pretrained(model, text_encoder_3=None, tokenizer_3=None,
                                                    torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    meta = json.loads((model / "noiseshift.json").read_text())
    msl = meta["max_sequence_length"]
    tiles = []
    for p in PROMPTS:
        row = []
        for s in range(a.seeds):
            im = pipe(p, height=C.NATIVE, width=C.NATIVE, num_inference_steps=a.steps, guidance_scale=a.guidance,
                      max_sequence_length=msl, generator=torch.Generator().manual_seed(s), output_type="np").images[0]
            row.append(im)
        tiles.append(row)
    n = C.NATIVE
    grid = Image.new("RGB", (a.seeds * (n + 4) + 4, len(PROMPTS) * (n + 18) + 4), "white")
    d = ImageDraw.Draw(grid)
    for r, row in enumerate(tiles):
        d.text((4, r * (n + 18) + 3), PROMPTS[r], fill="black")
        for c, im in enumerate(row):
            grid.paste(Image.fromarray(data.to_uint8(im)), (4 + c * (n + 4), r * (n + 18) + 16))
    grid.save(a.out)
    print(f"wrote {a.out} (StableDiffusion3Pipeline.__call__, {a.steps} steps, guidance {a.guidance}, "
          f"max_sequence_length {msl}, seeds 0..{a.seeds - 1})")

    try:
        import classifier as K
        clf = K.load()
        preds = K.predict(clf, np.stack([im for row in tiles for im in row]))
        prompts = [p for p in PROMPTS for _ in range(a.seeds)]
        ok = [K.adherent(q, p) for q, p in zip(preds, prompts)]
        print("classifier on these samples:", [f"{q['colour']} {q['shape']}" for q in preds], f"adherent {sum(ok)}/{len(ok)}")
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    main()
