// f16 operands, converted to f32 as staged: A and B of matmul_wg.wgsl (family matmul_wg_f16),
// x and w of conv2d_igemm.wgsl (family conv2d_igemm_f16).
enable f16;
alias Operand = f16;
