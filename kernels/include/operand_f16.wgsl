// f16 operands A and B for matmul_wg.wgsl (family matmul_wg_f16), converted to f32 as staged.
enable f16;
alias Operand = f16;
