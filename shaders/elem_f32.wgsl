// Element type of the row and flat kernels when a width is not a multiple of 4: one float per
// access. Activations need common.wgsl.
alias Elem = f32;

fn hsum(v: f32) -> f32 {
    return v;
}

const LANES: u32 = 1u;

fn lane(v: f32, j: u32) -> f32 {
    return v;
}

fn activate_elem(v: f32, act: u32) -> f32 {
    return activate(v, act);
}
