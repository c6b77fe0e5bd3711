// The storage type of matmul_wg.wgsl's operands A and B (family matmul_wg).
alias Operand = f32;
