// Element type of the row kernels (modulate, gated_residual, layer_norm) for rows whose width
// is not a multiple of 4: one float per access.
alias Elem = f32;

fn hsum(v: f32) -> f32 {
    return v;
}

fn lane0(v: f32) -> f32 {
    return v;
}
