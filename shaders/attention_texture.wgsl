// Fused attention for software adapters: keys and values are read from read-only rgba32float
// storage textures (packed by pack_texture.wgsl: row b * lk + t, head h at texels h * D4 ..),
// which llvmpipe loads vectorised, and each invocation carries eight queries (two groups of
// four, a and b, whose scores, maxima and sums are vec4s) so every loaded key or value texel
// feeds eight dot products: 1.2-1.7x faster than four queries on lavapipe (L = 1024 and 4429,
// head dims 64 and 128). Online softmax as in attention.wgsl, over keys in blocks of four:
// the accumulators (eight queries x D4 vec4s, which live in memory on a CPU) are rescaled,
// loaded and stored once per block instead of once per key, and the queries are loaded once
// for four keys. Medians of six alternating timings on lavapipe, per key against blocks of
// four: 13.2 / 15.6 GFLOP/s at L = 397 (head dim 64), 18.6 / 23.0 at L = 1024, 13.0 / 17.8 at
// L = 397 with head dim 128; blocks of eight were slower than four. No L x L matrix.
// Parameters, bindings, the private arrays, load_queries() and store_outputs() come from
// attention_texture_io.wgsl.

@compute @workgroup_size(16, 4)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.x * 8u;
    let h = gid.y;
    let b = gid.z;
    if (row0 >= p.lq || h >= p.heads) {
        return;
    }
    let gb = p.batch0 + b;
    load_queries(gb, row0, h);
    var run_max_a = vec4<f32>(-3.0e38);
    var run_sum_a = vec4<f32>(0.0);
    var run_max_b = vec4<f32>(-3.0e38);
    var run_sum_b = vec4<f32>(0.0);
    let col0 = h * D4;
    for (var t0 = 0u; t0 < p.lk; t0 += 4u) {
        let r0 = b * p.lk + min(t0 + 0u, p.lk - 1u);
        let r1 = b * p.lk + min(t0 + 1u, p.lk - 1u);
        let r2 = b * p.lk + min(t0 + 2u, p.lk - 1u);
        let r3 = b * p.lk + min(t0 + 3u, p.lk - 1u);
        var sa0 = vec4<f32>(0.0);
        var sb0 = vec4<f32>(0.0);
        var sa1 = vec4<f32>(0.0);
        var sb1 = vec4<f32>(0.0);
        var sa2 = vec4<f32>(0.0);
        var sb2 = vec4<f32>(0.0);
        var sa3 = vec4<f32>(0.0);
        var sb3 = vec4<f32>(0.0);
        for (var j = 0u; j < D4; j++) {
            let kv0 = textureLoad(kt, vec2<u32>(col0 + j, r0));
            let kv1 = textureLoad(kt, vec2<u32>(col0 + j, r1));
            let kv2 = textureLoad(kt, vec2<u32>(col0 + j, r2));
            let kv3 = textureLoad(kt, vec2<u32>(col0 + j, r3));
            sa0 += vec4<f32>(dot(q0[j], kv0), dot(q1[j], kv0), dot(q2[j], kv0), dot(q3[j], kv0));
            sb0 += vec4<f32>(dot(q4[j], kv0), dot(q5[j], kv0), dot(q6[j], kv0), dot(q7[j], kv0));
            sa1 += vec4<f32>(dot(q0[j], kv1), dot(q1[j], kv1), dot(q2[j], kv1), dot(q3[j], kv1));
            sb1 += vec4<f32>(dot(q4[j], kv1), dot(q5[j], kv1), dot(q6[j], kv1), dot(q7[j], kv1));
            sa2 += vec4<f32>(dot(q0[j], kv2), dot(q1[j], kv2), dot(q2[j], kv2), dot(q3[j], kv2));
            sb2 += vec4<f32>(dot(q4[j], kv2), dot(q5[j], kv2), dot(q6[j], kv2), dot(q7[j], kv2));
            sa3 += vec4<f32>(dot(q0[j], kv3), dot(q1[j], kv3), dot(q2[j], kv3), dot(q3[j], kv3));
            sb3 += vec4<f32>(dot(q4[j], kv3), dot(q5[j], kv3), dot(q6[j], kv3), dot(q7[j], kv3));
        }
        // Keys past the end (the last block's) get a score that exp() turns into 0.
        if (t0 + 1u >= p.lk) {
            sa1 = vec4<f32>(-3.0e38);
            sb1 = vec4<f32>(-3.0e38);
        }
        if (t0 + 2u >= p.lk) {
            sa2 = vec4<f32>(-3.0e38);
            sb2 = vec4<f32>(-3.0e38);
        }
        if (t0 + 3u >= p.lk) {
            sa3 = vec4<f32>(-3.0e38);
            sb3 = vec4<f32>(-3.0e38);
        }
        let ma = max(max(max(max(run_max_a, sa0), sa1), sa2), sa3);
        let ca = exp(run_max_a - ma);
        let ea0 = exp(sa0 - ma);
        let ea1 = exp(sa1 - ma);
        let ea2 = exp(sa2 - ma);
        let ea3 = exp(sa3 - ma);
        run_sum_a = run_sum_a * ca + (ea0 + ea1 + ea2 + ea3);
        run_max_a = ma;
        let mb = max(max(max(max(run_max_b, sb0), sb1), sb2), sb3);
        let cb = exp(run_max_b - mb);
        let eb0 = exp(sb0 - mb);
        let eb1 = exp(sb1 - mb);
        let eb2 = exp(sb2 - mb);
        let eb3 = exp(sb3 - mb);
        run_sum_b = run_sum_b * cb + (eb0 + eb1 + eb2 + eb3);
        run_max_b = mb;
        for (var j = 0u; j < D4; j++) {
            let vv0 = textureLoad(vt, vec2<u32>(col0 + j, r0));
            let vv1 = textureLoad(vt, vec2<u32>(col0 + j, r1));
            let vv2 = textureLoad(vt, vec2<u32>(col0 + j, r2));
            let vv3 = textureLoad(vt, vec2<u32>(col0 + j, r3));
            acc0[j] = acc0[j] * ca.x + ea0.x * vv0 + ea1.x * vv1 + ea2.x * vv2 + ea3.x * vv3;
            acc1[j] = acc1[j] * ca.y + ea0.y * vv0 + ea1.y * vv1 + ea2.y * vv2 + ea3.y * vv3;
            acc2[j] = acc2[j] * ca.z + ea0.z * vv0 + ea1.z * vv1 + ea2.z * vv2 + ea3.z * vv3;
            acc3[j] = acc3[j] * ca.w + ea0.w * vv0 + ea1.w * vv1 + ea2.w * vv2 + ea3.w * vv3;
            acc4[j] = acc4[j] * cb.x + eb0.x * vv0 + eb1.x * vv1 + eb2.x * vv2 + eb3.x * vv3;
            acc5[j] = acc5[j] * cb.y + eb0.y * vv0 + eb1.y * vv1 + eb2.y * vv2 + eb3.y * vv3;
            acc6[j] = acc6[j] * cb.z + eb0.z * vv0 + eb1.z * vv1 + eb2.z * vv2 + eb3.z * vv3;
            acc7[j] = acc7[j] * cb.w + eb0.w * vv0 + eb1.w * vv1 + eb2.w * vv2 + eb3.w * vv3;
        }
    }
    store_outputs(gb, row0, h, run_sum_a, run_sum_b);
}
