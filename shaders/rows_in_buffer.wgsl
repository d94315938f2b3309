// Input rows of a row kernel from a storage buffer of Elem (elem_*.wgsl); the kernel's Params
// give `cols` (Elem per row).
@group(0) @binding(1) var<storage, read> x: array<Elem>;

fn x_at(row: u32, i: u32) -> Elem {
    return x[row * p.cols + i];
}
