//! Our sigma schedule equals diffusers' FlowMatchEulerDiscreteScheduler (values recorded in
//! tests/fixtures/sigmas.json by the fixture script) to 1e-6.

mod common;

use noiseshift::schedule::sd3_sigmas;

#[test]
fn sigmas_match_diffusers() {
    let text = std::fs::read_to_string(common::fixtures().join("sigmas.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let n = case["steps"].as_u64().unwrap() as usize;
        let shift = case["shift"].as_f64().unwrap();
        let want: Vec<f64> = case["sigmas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got = sd3_sigmas(n, shift);
        assert_eq!(got.len(), want.len(), "N={n} shift={shift}");
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!("N={n} shift={shift}: max |ours - diffusers| = {err:.1e}");
        assert!(err <= 1e-6, "N={n} shift={shift}: {err}");
    }
}
