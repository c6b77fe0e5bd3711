// The storage type of the operands of matmul_wg.wgsl (A, B; family matmul_wg) and of
// conv2d_igemm.wgsl (x, w; family conv2d_igemm).
alias Operand = f32;
