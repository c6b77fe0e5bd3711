// Subgroup helpers of the lane-sharing kernels (the families matmul_subgroup and
// matmul_jvp_subgroup include them): on a driver that runs 8-lane subgroups as the SIMD lanes of a CPU
// (lavapipe), lanes that need the same operand block load 1/8 of it each and hand it to the
// others with subgroupBroadcast, instead of all 8 loading all of it. subgroupBroadcast needs a
// constant lane, hence one function per position.

// Vec4 column j of a shared 4 x 4 block as a mat4x4 over its four k-rows, from the lanes that
// loaded it (v0, v1: each lane's two vec4s). The lane index must be a constant, hence one
// function per j.
fn shared_col0(v0: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(v0, 0u), subgroupBroadcast(v0, 2u), subgroupBroadcast(v0, 4u), subgroupBroadcast(v0, 6u));
}
fn shared_col2(v0: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(v0, 1u), subgroupBroadcast(v0, 3u), subgroupBroadcast(v0, 5u), subgroupBroadcast(v0, 7u));
}

// Rows 4i..4i + 3 of a shared 16-row slice (one vec4 each) as a mat4x4, from the lanes that
// loaded them: lane l holds rows 2l (v0) and 2l + 1 (v1).
fn shared_rows0(v0: vec4<f32>, v1: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(v0, 0u), subgroupBroadcast(v1, 0u), subgroupBroadcast(v0, 1u), subgroupBroadcast(v1, 1u));
}
fn shared_rows1(v0: vec4<f32>, v1: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(v0, 2u), subgroupBroadcast(v1, 2u), subgroupBroadcast(v0, 3u), subgroupBroadcast(v1, 3u));
}
fn shared_rows2(v0: vec4<f32>, v1: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(v0, 4u), subgroupBroadcast(v1, 4u), subgroupBroadcast(v0, 5u), subgroupBroadcast(v1, 5u));
}
fn shared_rows3(v0: vec4<f32>, v1: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(v0, 6u), subgroupBroadcast(v1, 6u), subgroupBroadcast(v0, 7u), subgroupBroadcast(v1, 7u));
}

// The tile coordinates of this lane in a workgroup of 2 subgroups: x along lanes, y along
// subgroups.
fn tile_xy(wg: vec3<u32>, sg: u32, lane: u32) -> vec2<u32> {
    return vec2<u32>(wg.x * 8u + lane, wg.y * 2u + sg);
}
