// Mean and variance in one pass: each invocation runs Welford's update over its elements, one
// stream per vector component, and the streams merge with Chan's formula. Callers feed
// x - pivot, pivot an element of the same set: with a large mean, x - pivot is exact and
// small, so neither the running mean nor the deviations lose the digits that a mean near 1e3
// would round away (tested on 1e5-long rows with mean 1e3; a one-pass sum of squares would
// cancel outright). Needs an elem_*.wgsl snippet (Elem, LANES, lane) and defines WG and SETS:
// workgroup_stats reduces SETS independent statistics with one barrier sequence.

// Statistics of a set of values: (count, mean, sum of squared deviations from the mean).
alias Stats = vec3<f32>;

// Running statistics of one invocation: per-component mean and m2 after n elements.
struct Running {
    n: f32,
    mean: Elem,
    m2: Elem,
}

fn welford_add(acc: ptr<function, Running>, v: Elem) {
    (*acc).n += 1.0;
    let delta = v - (*acc).mean;
    (*acc).mean += delta * (1.0 / (*acc).n);
    (*acc).m2 += delta * (v - (*acc).mean);
}

// The components' streams merged into one.
fn running_stats(acc: Running) -> Stats {
    var s = Stats(acc.n, lane(acc.mean, 0u), lane(acc.m2, 0u));
    for (var j = 1u; j < LANES; j++) {
        s = merge(s, Stats(acc.n, lane(acc.mean, j), lane(acc.m2, j)));
    }
    return s;
}

// Chan's combination of the statistics of two disjoint sets.
fn merge(a: Stats, b: Stats) -> Stats {
    let n = a.x + b.x;
    if (n == 0.0) {
        return a;
    }
    let delta = b.y - a.y;
    return Stats(n, a.y + delta * (b.x / n), a.z + b.z + delta * delta * (a.x * b.x / n));
}

var<workgroup> partial: array<array<Stats, SETS>, WG>;

// Every set merged over the workgroup in a fixed tree order (deterministic). Every invocation
// must call it (it contains barriers).
fn workgroup_stats(lid: u32, s: array<Stats, SETS>) -> array<Stats, SETS> {
    partial[lid] = s;
    workgroupBarrier();
    for (var step = WG / 2u; step > 0u; step >>= 1u) {
        if (lid < step) {
            for (var k = 0u; k < SETS; k++) {
                partial[lid][k] = merge(partial[lid][k], partial[lid + step][k]);
            }
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
