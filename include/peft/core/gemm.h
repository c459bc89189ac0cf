// The float32 matrix products of a training step (the frozen base's x W^T and g W, the adapters'
// rank-r products), run on the faster of two BLAS libraries for this CPU: OpenBLAS or libtorch's own.
#pragma once
#include <ATen/ATen.h>

#include <string>

namespace peft {

enum class GemmBackend { libtorch, openblas };

// The backend in effect. PEFT_GEMM chooses it, read once: "libtorch" (libtorch's BLAS: MKL in the
// PyTorch wheels), "openblas" (the OpenBLAS of scipy-openblas32, found at configure time), or "auto"
// (the default): OpenBLAS on AMD CPUs, where it measured 1.2x (1 thread) to 2x (2 threads, x W^T)
// faster than the wheel's MKL at a training step's shapes (bench/README.md), libtorch elsewhere.
// Throws std::invalid_argument for another value, or "openblas" in a build without it.
GemmBackend gemm_backend();
// For tests and benchmarks: use `backend` from now on (throws if this build has no OpenBLAS).
void set_gemm_backend(GemmBackend backend);
bool openblas_available();
// A line for the user: "OpenBLAS 0.3.34.481.3 (Haswell kernels)" or "libtorch's BLAS".
std::string gemm_backend_description();

// a (m, k) @ b (k, n) -> (m, n). Either operand may be a transposed view. Float32 CPU tensors go to the
// backend in effect (on OpenBLAS split into one block of rows or columns per libtorch thread, each a
// single-threaded product; the same thread count gives the same bits); anything else, and
// autograd-tracked inputs, go to at::mm.
at::Tensor mm(const at::Tensor& a, const at::Tensor& b);
// c = beta c + alpha a @ b, in place; c is (m, n) with rows of unit stride (else at::Tensor::addmm_).
void addmm_(at::Tensor& c, const at::Tensor& a, const at::Tensor& b, double beta = 1.0, double alpha = 1.0);
// bias (n) + a @ b, as at::addmm.
at::Tensor addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b);

}  // namespace peft
