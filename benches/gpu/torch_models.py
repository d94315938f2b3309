#!/usr/bin/env python3
"""diffusers' side of benches/flux.rs and benches/vae.rs on the same card, in the same call
(benches/gpu/run.sh): a FLUX.1-dev-shaped FluxTransformer2DModel forward (random bf16 weights,
2 double + 4 single blocks at 1024 x 1024, scaled to 19 + 38 blocks by FLOPs exactly as
benches/flux.rs scales ours) and the SD3 VAE decoder at 1024 x 1024 in bf16 and f32. Random
weights (diffusers' own initialisation: timing only). --quick: small shapes, for a smoke test
on a CPU.

    python3 benches/gpu/torch_models.py [--device cuda] [--quick] [--json OUT]
"""

import argparse
import json
import time

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel

D = 3072


def best_of(fn, device, reps):
    """Best wall time of `reps` runs after two warm-up runs (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def block_flops(tokens, d):
    """benches/flux.rs's count: 24 d^2 per token of linears, 4 tokens^2 d of attention."""
    return 2.0 * 12.0 * d * d * tokens + 4.0 * tokens * tokens * d


def flux(device, quick):
    side, text, double, single = (256, 64, 1, 1) if quick else (1024, 512, 2, 4)
    heads = 2 if quick else 24
    d = 128 * heads
    model = FluxTransformer2DModel(num_layers=double, num_single_layers=single, attention_head_dim=128,
                                   num_attention_heads=heads, guidance_embeds=True)
    model = model.to(device=device, dtype=torch.bfloat16).eval()
    lat = side // 8
    image = (lat // 2) ** 2
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, image, 64, generator=g),
        encoder_hidden_states=torch.randn(1, text, 4096, generator=g),
        pooled_projections=torch.randn(1, 768, generator=g),
        timestep=torch.tensor([0.7]),
        guidance=torch.tensor([3.5]),
        img_ids=torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(lat // 2.0), torch.arange(lat // 2.0),
                                           indexing="ij"), -1).reshape(-1, 3),
        txt_ids=torch.zeros(text, 3),
    )
    activations = ("hidden_states", "encoder_hidden_states", "pooled_projections")
    inputs = {k: v.to(device, torch.bfloat16 if k in activations else v.dtype) for k, v in inputs.items()}
    with torch.no_grad():
        secs = best_of(lambda: model(**inputs, return_dict=False), device, 3 if quick else 5)
    per = block_flops(image + text, d)
    flops = (double + single) * per
    full = secs * (57 * per) / flops
    print(f"diffusers FLUX.1-dev-shaped forward bf16 on {device}: {side}x{side} px, {double} + {single} blocks "
          f"{secs:.4f} s ({flops / secs / 1e12:.2f} TFLOP/s), scaled to 19 + 38 blocks {full:.3f} s")
    return {"side": side, "double": double, "single": single, "seconds": secs, "scaled_19_38": full,
            "tflops": flops / secs / 1e12}


def vae(device, quick):
    side = 256 if quick else 1024
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        model = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                              layers_per_block=2, norm_num_groups=32,
                              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                              use_quant_conv=False, use_post_quant_conv=False)
        model = model.to(device=device, dtype=dtype).eval()
        z = torch.randn(1, 16, side // 8, side // 8, generator=torch.Generator().manual_seed(1)).to(device, dtype)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            secs = best_of(lambda: model.decode(z).sample, device, 2 if quick else 3)
        peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
        name = str(dtype).replace("torch.", "")
        print(f"diffusers VAE decode {name} on {device}: {side}x{side} px {secs:.4f} s, peak {peak} MiB")
        out[name] = {"side": side, "seconds": secs, "peak_mib": peak}
        del model
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    result = {"device": torch.cuda.get_device_name() if a.device == "cuda" else a.device,
              "torch": torch.__version__, "flux": flux(a.device, a.quick), "vae": vae(a.device, a.quick)}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
