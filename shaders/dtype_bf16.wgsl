// Weight access for bf16 weights packed two per u32: bf16 is the top half of an f32.
alias WPack = vec2<u32>;

fn bf16_pair(u: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(u << 16u), bitcast<f32>(u & 0xffff0000u));
}

fn w_vec4(i: u32) -> vec4<f32> {
    let p = w[i];
    return vec4<f32>(bf16_pair(p.x), bf16_pair(p.y));
}

fn w_at(e: u32) -> f32 {
    let p = w[e >> 2u];
    return bf16_pair(select(p.x, p.y, (e & 2u) != 0u))[e & 1u];
}
