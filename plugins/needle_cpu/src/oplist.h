// The elementwise kernels of the contract, listed once. kernels.h expands these lists into its
// loop bodies, elementwise.cpp into its dispatch, module.cpp into the bindings
// `ewise_<op>` / `scalar_<op>`; _ext.pyi declares the same names (a test checks it).

#pragma once

// Arithmetic: ewise_<op>(a, b, out) and scalar_<op>(a, val, out).
#define NDL_ARITHMETIC(X) X(add) X(mul) X(div) X(maximum) X(power)
// Comparisons writing bool: ewise_<op> and scalar_<op> ...
#define NDL_COMPARE(X) X(eq) X(ne) X(ge) X(gt)
// ... and scalar_<op> only.
#define NDL_SCALAR_COMPARE(X) X(le) X(lt)
// Float math: ewise_<op>(a, out).
#define NDL_UNARY(X) X(log) X(exp) X(tanh)

namespace needle_cpu {

#define NDL_ENUM(op) op,
enum class Arith { NDL_ARITHMETIC(NDL_ENUM) };
enum class Cmp { NDL_COMPARE(NDL_ENUM) NDL_SCALAR_COMPARE(NDL_ENUM) };
enum class Unary { NDL_UNARY(NDL_ENUM) };
#undef NDL_ENUM

}  // namespace needle_cpu
