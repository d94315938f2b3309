// Weight access for f16 weights through the shader-f16 extension (adapters with SHADER_F16).
enable f16;

alias WPack = vec4<f16>;

fn w_vec4(i: u32) -> vec4<f32> {
    return vec4<f32>(w[i]);
}

fn w_at(e: u32) -> f32 {
    return f32(w[e >> 2u][e & 3u]);
}
