// Weight access for f16 weights packed two per u32 (works without the SHADER_F16 feature).
alias WPack = vec2<u32>;

fn w_vec4(i: u32) -> vec4<f32> {
    let p = w[i];
    return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y));
}

fn w_at(e: u32) -> f32 {
    let p = w[e >> 2u];
    return unpack2x16float(select(p.x, p.y, (e & 2u) != 0u))[e & 1u];
}
