//! One transformer forward against diffusers (float64 reference from tests/fixtures), with a
//! different timestep per batch row, on every adapter present.

mod common;

use common::*;

fn check(model: &str, case: &str) {
    for gpu in all_gpus() {
        let m = load_model(&gpu, model);
        let mut t = read(
            &fixtures()
                .join("forward")
                .join(format!("{case}.safetensors")),
        );
        let latents = t["latents"].upload(&gpu).unwrap();
        let sigmas: Vec<f64> = t["timestep"]
            .data
            .iter()
            .map(|&v| f64::from(v) / 1000.0)
            .collect();
        let text = text(&gpu, &t["prompt_embeds"], &t["pooled_prompt_embeds"]);
        let out = m.velocity(&gpu, &latents, &sigmas, &text, 1.0).unwrap();
        let want = t.remove("output").unwrap();
        assert_eq!(out.shape(), &want.shape[..]);
        assert_max_rel(
            &format!("{case} on {}", gpu.adapter.label()),
            &out.to_vec(&gpu).unwrap(),
            &want.data,
            1e-4,
        );
    }
}

#[test]
fn sd3_bf16_square_batch2() {
    check("sd3-tiny", "sd3-tiny-8x8");
}

#[test]
fn sd3_full_position_grid() {
    check("sd3-tiny", "sd3-tiny-24x24");
}

#[test]
fn sd35_qk_norm_dual_attention_f16_nonsquare() {
    check("sd35-tiny", "sd35-tiny-6x10");
}

#[test]
fn sd35_single_file_matches_diffusers_folder() {
    check("sd35-tiny-single.safetensors", "sd35-tiny-6x10");
}
