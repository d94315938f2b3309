// Input of a kernel that reads x by flat Elem index (elem_*.wgsl), from a storage buffer.
@group(0) @binding(1) var<storage, read> x: array<Elem>;

fn x_flat(i: u32) -> Elem {
    return x[i];
}
