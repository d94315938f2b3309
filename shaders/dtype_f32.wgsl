// Weight access for f32 weights: `w` is declared by the kernel as array<WPack>.
alias WPack = vec4<f32>;

fn w_vec4(i: u32) -> vec4<f32> {
    return w[i];
}

fn w_at(e: u32) -> f32 {
    return w[e >> 2u][e & 3u];
}
