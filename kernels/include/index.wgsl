// Invocation indices of the 1-D entry points, whose workgroups the host lays out over x and y
// (src/ops/mod.rs `groups_1d`) so that neither count exceeds 65535.

// Element i of an entry point with one invocation per element (workgroups of ELEMENT_WG).
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * ELEMENT_WG;
}

// Lane t of an entry point over flattened lanes (workgroups of LANE_WG).
fn lane(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * LANE_WG;
}
