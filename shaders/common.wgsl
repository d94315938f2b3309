// Shared helpers: activation functions (also fused into the linear epilogue) and grid indexing.

const ACT_NONE: u32 = 0u;
const ACT_GELU_TANH: u32 = 1u;
const ACT_GELU_ERF: u32 = 2u;
const ACT_QUICK_GELU: u32 = 3u;
const ACT_SILU: u32 = 4u;

// erf through the Numerical Recipes erfc fit (fractional error < 1.2e-7): enough for f32 GELU.
fn erf_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}

fn sigmoid(x: f32) -> f32 {
    // exp of a large positive argument overflows to inf, and 1/(1+inf) = 0 as wanted.
    return 1.0 / (1.0 + exp(-x));
}

fn gelu_tanh(x: f32) -> f32 {
    // 0.5 x (1 + tanh(u)) = x * sigmoid(2u): avoids tanh's inf/inf for large |u|.
    let u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
    return x * sigmoid(2.0 * u);
}

// Kernels pass `act` as a build-time constant (the define ACT), so only its case is compiled:
// llvmpipe runs every case of a switch on a uniform under a lane mask, which cost the texture
// matmuls 8-14 % of their time and the activation kernel half its speed.
fn activate(x: f32, act: u32) -> f32 {
    switch act {
        case ACT_GELU_TANH: { return gelu_tanh(x); }
        case ACT_GELU_ERF: { return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476)); }
        case ACT_QUICK_GELU: { return x * sigmoid(1.702 * x); }
        case ACT_SILU: { return x * sigmoid(x); }
        default: { return x; }
    }
}

// Flat invocation index over a 2D grid of 256-wide workgroups (dispatches past 65535 groups).
fn flat_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}
