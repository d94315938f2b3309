// Element type of the row and flat kernels when widths are multiples of 4 (every model's): one
// vec4 per access, a quarter of the accesses (llvmpipe splits each buffer access into a
// per-lane loop, whatever its width). Activations need common.wgsl.
alias Elem = vec4<f32>;

fn hsum(v: vec4<f32>) -> f32 {
    return v.x + v.y + v.z + v.w;
}

// Component j of an element (welford.wgsl keeps one stream per component).
const LANES: u32 = 4u;

fn lane(v: vec4<f32>, j: u32) -> f32 {
    return v[j];
}

// An activation of common.wgsl on every component.
fn activate_elem(v: vec4<f32>, act: u32) -> vec4<f32> {
    return vec4(activate(v.x, act), activate(v.y, act), activate(v.z, act), activate(v.w, act));
}
