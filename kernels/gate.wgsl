// Gated regions (src/gpu/gate.rs): the dispatches recorded in a region run indirectly, their
// workgroup counts read from `args`. One invocation per dispatch copies the counts the host
// recorded (`templates`) when the region is open and writes zeros when it is closed, so that
// a closed region's dispatches run no workgroup. Slot i (3 words: x, y, z) is dispatch i of the
// region's part in this submission. Open: the flag is non-zero when the region's first gate
// runs; that gate latches the flag at word 3 GATE_SLOTS of `args`, and the gate of a part after
// a submission inside the region reads the latch (the region may have changed the flag).
@group(0) @binding(1) var<storage, read> flag: array<f32>;
@group(0) @binding(2) var<storage, read> templates: array<u32>;
@group(0) @binding(3) var<storage, read_write> args: array<u32>;

@compute @workgroup_size(ELEMENT_WG)
fn gate_dispatches(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let latch = 3u * GATE_SLOTS;
    var open: bool;
    if (p.from_latch == 0u) {
        open = flag[p.flag_index] != 0.0;
        if (i == 0u) { args[latch] = select(0u, 1u, open); }
    } else {
        open = args[latch] != 0u;
    }
    if (i >= p.count) { return; }
    let s = 3u * i;
    for (var q = 0u; q < 3u; q++) {
        args[s + q] = select(0u, templates[s + q], open);
    }
}
