//! CPU reference of the elementwise ops (`kernels/elementwise.wgsl`).

/// `alpha * a + beta * b`.
pub fn axpby(alpha: f32, a: &[f32], beta: f32, b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| alpha * x + beta * y).collect()
}

/// `a * b` elementwise.
pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x * y).collect()
}

/// `alpha * a`.
pub fn scale(alpha: f32, a: &[f32]) -> Vec<f32> {
    a.iter().map(|x| alpha * x).collect()
}

/// `max(a, 0)`.
pub fn relu(a: &[f32]) -> Vec<f32> {
    a.iter().map(|&x| x.max(0.0)).collect()
}

/// `g * [x > 0]`.
pub fn relu_backward(g: &[f32], x: &[f32]) -> Vec<f32> {
    g.iter().zip(x).map(|(&g, &x)| if x > 0.0 { g } else { 0.0 }).collect()
}

/// Primal and tangent of ReLU.
pub fn relu_jvp(x: &[f32], dx: &[f32]) -> (Vec<f32>, Vec<f32>) {
    (relu(x), relu_backward(dx, x))
}

/// `x[r, c] + b[c]`, then ReLU when `relu`.
pub fn add_bias(x: &[f32], b: &[f32], relu: bool) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = v + b[i % b.len()];
            if relu {
                s.max(0.0)
            } else {
                s
            }
        })
        .collect()
}

/// Splits a flat vector into consecutive pieces of the given lengths.
pub fn split(flat: &[f32], lens: &[usize]) -> Vec<Vec<f32>> {
    let mut off = 0;
    lens.iter()
        .map(|&n| {
            let piece = flat[off..off + n].to_vec();
            off += n;
            piece
        })
        .collect()
}
